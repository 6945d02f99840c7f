"""ParameterOverview: the model's parameter table, in a file, in TensorBoard and (at DEBUG) in
the log; one INFO line with the totals."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from flaxtrainer.callbacks.base import Callback

if TYPE_CHECKING:
    from flaxtrainer.callbacks.view import TrainerView

logger = logging.getLogger(__name__)

#: The table's file in ``output_dir`` and its TensorBoard text tag.
PARAMETERS_FILE = "parameters.txt"
TENSORBOARD_TAG = "parameters"


class ParameterOverview(Callback):
    """At the start of training (process 0; a resumed run did it when it started): the
    model's parameter table (name, shape, dtype, size; ``clu.parameter_overview``) goes to
    ``<output_dir>/parameters.txt``, to TensorBoard's text tab as ``parameters`` (step 0) when a
    ``TensorBoard`` callback is attached, and to the log at DEBUG (``--log_level debug``); the
    log gets one INFO line, e.g. ``Model: 22,573,461 parameters (90.3 MB); table in
    out/parameters.txt and TensorBoard (text: parameters)``.

    The TensorBoard callback may come after this one (the command line puts its own
    ``TensorBoard`` among the user's callbacks, after the defaults), so its writer may not be
    open yet in ``on_train_begin``; the table is then written at the first step's end, when
    every callback has had ``on_train_begin``.
    """

    def __init__(self, max_lines: int | None = None) -> None:
        self.max_lines = max_lines
        self.text: str | None = None
        self.total: int | None = None
        self.nbytes: int | None = None
        self._tensorboard_pending = False

    def on_train_begin(self, trainer: TrainerView) -> None:
        self._tensorboard_pending = False
        if jax.process_index() != 0 or trainer.state.global_step > 0:
            return  # a resumed run logged it when it started
        try:
            from flax import nnx

            params = nnx.to_pure_dict(nnx.state(trainer.model, nnx.Param))
            leaves = jax.tree.leaves(params)
            self.total = sum(int(x.size) for x in leaves)
            self.nbytes = sum(int(x.size) * x.dtype.itemsize for x in leaves)
            self.text = _table(params, self.max_lines)
        except Exception:  # noqa: BLE001 - an overview must never stop a run
            logger.exception("Could not build the parameter overview")
            return
        places = []
        if self.text is not None:
            path = _write_file(trainer, self.text)
            if path is not None:
                places.append(str(path))
            if _tensorboards(trainer):
                places.append(f"TensorBoard (text: {TENSORBOARD_TAG})")
                self._tensorboard_pending = True
        where = f"; table in {' and '.join(places)}" if places else ""
        logger.info(
            "Model: %s parameters (%s)%s", f"{self.total:,}", _size(self.nbytes or 0), where
        )
        if self.text is not None:
            logger.debug("Model parameters:\n%s", self.text)
        self._write_tensorboard(trainer)

    def on_step_end(self, trainer: TrainerView) -> None:
        if self._tensorboard_pending:
            self._write_tensorboard(trainer)

    def _write_tensorboard(self, trainer: TrainerView) -> None:
        """Write the table into the first attached TensorBoard's open event file, once."""
        if not self._tensorboard_pending or self.text is None:
            return
        for board in _tensorboards(trainer):
            if board.writer is not None:
                board.writer.write_text(0, TENSORBOARD_TAG, f"```\n{self.text}\n```")
                self._tensorboard_pending = False
                return


def _tensorboards(trainer: TrainerView) -> list[Any]:
    from flaxtrainer.callbacks.tensorboard import TensorBoard

    return [c for c in trainer.callbacks if isinstance(c, TensorBoard)]


def _table(params: Any, max_lines: int | None) -> str | None:
    """``clu.parameter_overview``'s table, or None (logged) when clu is not installed."""
    try:
        from clu import parameter_overview
    except ImportError:
        logger.info("clu is not installed: no parameter table (pip install clu).")
        return None
    return parameter_overview.get_parameter_overview(
        params, include_stats=False, max_lines=max_lines
    )


def _write_file(trainer: TrainerView, text: str) -> Path | None:
    output_dir = getattr(trainer.args, "output_dir", None)
    if not output_dir:
        return None
    path = Path(output_dir) / PARAMETERS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        logger.warning("Could not write %s: %s", path, exc)
        return None
    return path


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


__all__ = ["PARAMETERS_FILE", "TENSORBOARD_TAG", "ParameterOverview"]
