"""The Task plugin: everything problem-specific that the trainer must not know.

The trainer calls a task, never the other way round: ``prepare`` once per dataset on the host,
``loss`` and ``predict_step`` inside jitted steps, ``compute_metrics`` and ``decode`` on the
host after prediction. See docs/internals.md for the contract.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


class Task(abc.ABC):
    """Base class of tasks (token classification, POS tagging, chunking, your own).

    Subclasses set ``num_labels`` and ``id2label`` (the model head) and may narrow
    ``model_input_names`` to what their tokenizer produces.
    """

    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    num_labels: int
    id2label: dict[int, str]

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    @abc.abstractmethod
    def prepare(self, dataset: Any) -> list[dict]:
        """One feature per model row, in dataset order: unpadded int32 arrays for each of
        ``model_input_names`` and ``labels`` (-100: no loss), plus host metadata."""

    @abc.abstractmethod
    def loss(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(sum of token losses, count of labels != -100); jit-traceable."""

    @abc.abstractmethod
    def predict_step(self, logits: jax.Array) -> dict[str, jax.Array]:
        """Per-token outputs ``[B, S, ...]`` (e.g. predictions, scores); jit-traceable."""

    @abc.abstractmethod
    def compute_metrics(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[dict[str, np.ndarray]]
    ) -> dict[str, float]:
        """Metrics from ``outputs[i]``: ``predict_step`` arrays of ``features[i]``, cut to its
        length, as numpy."""

    @abc.abstractmethod
    def decode(
        self, dataset: Any, features: Sequence[dict], outputs: Sequence[dict[str, np.ndarray]]
    ) -> list[list[str]]:
        """Word-level tags of every example, in dataset order."""
