"""The final export of a run: the model in Hugging Face format plus ``trainer_state.json``.

``FlaxTrainer.train()`` ends with :func:`export_run` into ``output_dir`` (after
``load_best_model_at_end``), so the folder is what the rest of the ecosystem reads:
``config.json`` + float32 ``model.safetensors`` + the tokenizer's files, which
``flaxtrainer.models.from_pretrained`` and transformers' PyTorch
``AutoModelForTokenClassification.from_pretrained`` both load. Process 0 writes; the other
processes of a multi-host run write nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
from flax import nnx

from flaxtrainer.outputs.results import TRAINER_STATE, write_trainer_state

if TYPE_CHECKING:
    from flaxtrainer.callbacks.state import TrainerState

logger = logging.getLogger(__name__)


def export_model(model: nnx.Module, directory: str | Path, tokenizer: Any = None) -> bool:
    """Write ``model`` (and ``tokenizer``) to ``directory`` in Hugging Face format.

    flaxtrainer's encoders go through ``flaxtrainer.models.save_pretrained``; any other model
    that has a ``save_pretrained(directory)`` method uses it. Returns False, with a warning,
    for a model that has neither (e.g. a user's own NNX module): nothing is written then.
    """
    from flaxtrainer.models import EncoderForTokenClassification, save_pretrained

    if isinstance(model, EncoderForTokenClassification):
        save_pretrained(model, directory, tokenizer)
        return True
    own = getattr(model, "save_pretrained", None)
    if callable(own):
        Path(directory).mkdir(parents=True, exist_ok=True)
        own(str(directory))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
        return True
    logger.warning(
        "%s is not a flaxtrainer encoder and has no save_pretrained(directory) method: the final "
        "model is not exported to %s (its weights are in the checkpoints).",
        type(model).__name__,
        directory,
    )
    return False


def export_run(
    model: nnx.Module, directory: str | Path, *, tokenizer: Any = None, state: TrainerState
) -> None:
    """Export ``model`` (see :func:`export_model`) and ``state`` as ``trainer_state.json``."""
    if jax.process_index() != 0:
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if export_model(model, directory, tokenizer):
        logger.info("Saved the final model to %s.", directory)
    write_trainer_state(directory / TRAINER_STATE, state)
