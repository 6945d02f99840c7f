"""The one error type of the data readers."""


class DataError(ValueError):
    """Bad or unreadable input data.

    The message names the file (or hub dataset), the line or row, the problem and what to do.
    """
