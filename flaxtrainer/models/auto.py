"""`from_pretrained` / `save_pretrained` / `load_config`: Hugging Face folders <-> NNX models."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.config import EncoderConfig, labels_from_id2label
from flaxtrainer.models.hf_weights import (
    CRF_RULES,
    SAFETENSORS_NAME,
    SafetensorsCheckpoint,
    export_weights,
    load_weights,
    write_safetensors,
)
from flaxtrainer.models.hub import resolve_model_path
from flaxtrainer.models.registry import family_for, family_of
from flaxtrainer.models.token_classification import (
    DEFAULT_CLASSIFIER_INIT,
    ClassifierInit,
    EncoderForTokenClassification,
)

logger = logging.getLogger("flaxtrainer")


def load_config(name_or_path: str | os.PathLike) -> EncoderConfig:
    """The family config read from `config.json` of a local folder or hub id."""
    return read_config(resolve_model_path(name_or_path))


def read_config(folder: str | os.PathLike) -> EncoderConfig:
    """Parses `folder/config.json` into its family's config dataclass."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelLoadError(
            f"{folder}: no config.json; expected a Hugging Face model folder "
            "(config.json + model.safetensors)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object, got {type(data).__name__}")
    family = family_for(data.get("model_type"), str(path))
    return family.config_cls.from_hf_dict(data, str(path))


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    num_labels: int | None = None,
    id2label: Mapping[int, str] | None = None,
    label2id: Mapping[str, int] | None = None,
    dtype: DTypeLike = jnp.float32,
    param_dtype: DTypeLike = jnp.float32,
    rngs: nnx.Rngs | None = None,
    classifier_init: ClassifierInit = DEFAULT_CLASSIFIER_INIT,
    crf: bool | None = None,
) -> EncoderForTokenClassification:
    """Builds `<Family>ForTokenClassification` from a folder or hub id with safetensors weights.

    Labels come from the checkpoint unless `num_labels` / `id2label` / `label2id` ask for others.
    When the checkpoint has no classifier (a base model), or its labels differ from the requested
    ones, the head is newly initialised (from `rngs`, default `nnx.Rngs(0)`; kernel std from
    `classifier_init`: "lecun" = 1/sqrt(hidden), "hf" = the family's Hugging Face init, or a
    float) and one line is logged. A head loaded from the checkpoint is never re-initialised.
    `dtype` is the compute dtype, `param_dtype` the dtype parameters are stored in.
    `crf` adds (True) or drops (False) a CRF layer (`flaxtrainer.models.crf`; None: as `config.json`
    says); its transitions load with the classifier, else start at zero.
    """
    folder = resolve_model_path(name_or_path)
    config = read_config(folder)
    if crf is not None:
        config = dataclasses.replace(config, crf=crf)
    family = family_for(config.model_type)
    requested = _requested_labels(num_labels, id2label, label2id, config.labels)
    with SafetensorsCheckpoint(folder) as checkpoint:
        has_head = {rule.hf for rule in family.weights.head} <= set(checkpoint.keys())
        checkpoint_labels = config.labels
        load_head = has_head and requested in (None, checkpoint_labels)
        labels = requested or checkpoint_labels
        config = config.with_labels(labels)
        model = nnx.eval_shape(
            lambda: family.model_cls(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        )
        report = load_weights(
            model, checkpoint, family.weights, load_head=load_head, param_dtype=param_dtype
        )
    if not load_head:
        model.reset_classifier(rngs=rngs if rngs is not None else nnx.Rngs(0), init=classifier_init)
        reason = (
            f"the checkpoint's classifier has labels {_preview(checkpoint_labels)} "
            f"but {_preview(labels)} were requested"
            if has_head
            else "no token-classification head in the checkpoint"
        )
        logger.info(
            "%s: %s; initialised a new classifier for %d labels (std %.4g, classifier_init=%s)",
            checkpoint.source,
            reason,
            len(labels),
            model.classifier_std(classifier_init),
            classifier_init,
        )
    if load_head and model.config.crf and not {r.hf for r in CRF_RULES} <= set(report.loaded):
        model.reset_crf()
        logger.info("%s: no CRF tensors in the checkpoint; initialised a new CRF layer", folder)
    if report.unused:
        prefix = family.weights.prefix
        groups = {key.removeprefix(prefix).split(".")[0] + ".*" for key in report.unused}
        logger.debug(
            "%s: ignored %d tensors not used for token classification (%s)",
            checkpoint.source,
            len(report.unused),
            ", ".join(sorted(groups)),
        )
    _check_concrete(model)
    return model


def save_pretrained(
    model: EncoderForTokenClassification,
    directory: str | os.PathLike,
    tokenizer: Any = None,
) -> Path:
    """Writes `config.json` and float32 `model.safetensors` that transformers (PyTorch) loads.

    `AutoModelForTokenClassification.from_pretrained(directory)` finds every key it expects;
    `from_pretrained(directory)` here loads it back. A tokenizer, if given, is saved alongside.
    """
    family = family_of(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = export_weights(model, family.weights)
    weights = directory / SAFETENSORS_NAME
    unfinished = weights.with_suffix(".safetensors.partial")
    write_safetensors(tensors, unfinished)
    os.replace(unfinished, weights)  # never leave a truncated checkpoint behind
    config = json.dumps(model.config.to_hf_dict(), indent=2, sort_keys=True)
    (directory / "config.json").write_text(config + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def _requested_labels(
    num_labels: int | None,
    id2label: Mapping[int, str] | None,
    label2id: Mapping[str, int] | None,
    checkpoint_labels: tuple[str, ...],
) -> tuple[str, ...] | None:
    """The labels the caller asks for, or None to keep the checkpoint's."""
    labels = None
    if id2label is not None:
        labels = labels_from_id2label(id2label, "id2label argument")
    if label2id is not None:
        from_label2id = labels_from_id2label(
            {i: label for label, i in label2id.items()}, "label2id argument"
        )
        if labels is not None and labels != from_label2id:
            raise ValueError(
                f"id2label {dict(enumerate(labels))} and label2id {dict(label2id)} disagree"
            )
        labels = from_label2id
    if num_labels is not None:
        if labels is not None and len(labels) != num_labels:
            raise ValueError(
                f"num_labels={num_labels} but {len(labels)} labels given: {list(labels)}"
            )
        if labels is None:
            if num_labels == len(checkpoint_labels):
                return checkpoint_labels
            labels = tuple(f"LABEL_{i}" for i in range(num_labels))
    return labels


def _preview(labels: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(labels[:limit])
    return f"[{shown}{', ...' if len(labels) > limit else ''}]"


def _check_concrete(model: nnx.Module) -> None:
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Variable) and isinstance(node.get_value(), jax.ShapeDtypeStruct):
            raise RuntimeError(f"parameter {'.'.join(map(str, path))} was never initialised")
