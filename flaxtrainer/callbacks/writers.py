"""Metric writers: TensorBoard event files through tensorboardX (no TensorFlow), process 0 only.

Callbacks talk to a :class:`MetricWriter`; :func:`create_writer` hands every process but the
first a :class:`NullWriter`, so only one process writes events in a multi-host run.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax


class MetricWriter:
    """Interface: scalars, markdown text, images and hyper-parameters, each at an integer step."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        raise NotImplementedError

    def write_text(self, step: int, tag: str, text: str) -> None:
        raise NotImplementedError

    def write_image(self, step: int, tag: str, image: Any) -> None:
        """An RGB ``uint8`` image ``[height, width, 3]`` (e.g. the entity confusion matrix)."""
        raise NotImplementedError

    def write_hparams(self, hparams: Mapping[str, Any], metric_tags: tuple[str, ...] = ()) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class NullWriter(MetricWriter):
    """Writes nothing (processes other than 0, ``report_to="none"``)."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def write_text(self, step: int, tag: str, text: str) -> None:
        pass

    def write_image(self, step: int, tag: str, image: Any) -> None:
        pass

    def write_hparams(self, hparams: Mapping[str, Any], metric_tags: tuple[str, ...] = ()) -> None:
        pass


class TensorBoardWriter(MetricWriter):
    """tensorboardX ``SummaryWriter`` under ``logdir``.

    Each writer gets its own event file (tensorboardX names files by the second, so two writers
    opened within a second would otherwise overwrite each other). Events are certain to be on
    disk only after ``close()``: tensorboardX's ``flush()`` hands them to a background thread.

    ``purge_step`` (for a resumed run, the first step it will log) starts the file with a
    session-restart event: TensorBoard then hides every event of earlier files in ``logdir`` at
    or after that step, i.e. what a killed run logged past its last checkpoint, so each step
    shows once.
    """

    _instances = itertools.count()

    def __init__(self, logdir: str, purge_step: int | None = None) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = logdir
        # Zero-padded, so that files opened within one second sort (and load) in order.
        suffix = f".{os.getpid()}.{next(self._instances):06d}"
        self._writer = SummaryWriter(logdir=logdir, filename_suffix=suffix, purge_step=purge_step)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), global_step=step)

    def write_text(self, step: int, tag: str, text: str) -> None:
        self._writer.add_text(tag, text, global_step=step)

    def write_image(self, step: int, tag: str, image: Any) -> None:
        self._writer.add_image(tag, image, global_step=step, dataformats="HWC")

    def write_hparams(self, hparams: Mapping[str, Any], metric_tags: tuple[str, ...] = ()) -> None:
        """Hyper-parameters for TensorBoard's HPARAMS tab, in this run (no sub-run), plus the
        full set as JSON text; ``metric_tags`` name scalar tags the tab should show."""
        from tensorboardX.summary import hparams as hparams_summary

        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        experiment, session_start, session_end = hparams_summary(
            clean, {t: 0.0 for t in metric_tags}
        )
        file_writer = self._writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        text = json.dumps({k: _jsonable(v) for k, v in hparams.items()}, indent=2, sort_keys=True)
        self._writer.add_text("hparams", f"```\n{text}\n```", global_step=0)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def create_writer(
    logdir: str | None, enabled: bool = True, purge_step: int | None = None
) -> MetricWriter:
    """A TensorBoard writer on process 0 when enabled and ``logdir`` is set, else a NullWriter."""
    if not enabled or logdir is None or jax.process_index() != 0:
        return NullWriter()
    return TensorBoardWriter(logdir, purge_step=purge_step)


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)
