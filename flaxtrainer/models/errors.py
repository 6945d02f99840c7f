"""The one exception type raised for unusable model folders, configs and checkpoints."""


class ModelLoadError(ValueError):
    """A model folder, hub id, ``config.json`` or checkpoint cannot be used.

    The message names the file (or hub id) and says what is wrong and what to do about it.
    """
