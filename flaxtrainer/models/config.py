"""Frozen, hashable encoder configs filtered from (and written back to) Hugging Face `config.json`.

Each family subclasses :class:`EncoderConfig`, adding its hyper-parameters as dataclass fields
under their Hugging Face names, so reading is a filter over `config.json` and writing is
`dataclasses.asdict`. Names several families share are declared (and checked) once: the sizes
in :class:`TransformerConfig`, BERT's names of a post-LN encoder in :class:`BertLikeConfig`.
Configs are frozen and hashable because NNX keeps them as static module attributes (part of the
graph definition that `jax.jit` caches on).
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Mapping
from typing import Any, ClassVar

from flax import nnx
from jax.nn.initializers import Initializer

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.layers import SUPPORTED_ACTIVATIONS

# config.json keys that the config owns (or that describe a saved file rather than the model);
# everything else is kept verbatim in `extra_json` and written back on save.
_NOT_EXTRA = frozenset(
    {
        "model_type",
        "architectures",
        "id2label",
        "label2id",
        "num_labels",
        "transformers_version",
        "_name_or_path",
        "torch_dtype",
        "dtype",
        "auto_map",
    }
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Hyper-parameters shared by every family, plus the labels of the classification head.

    Labels are stored as a tuple ordered by id (hashable); `id2label`, `label2id` and
    `num_labels` are derived from it.
    """

    model_type: str
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    pad_token_id: int = 0
    labels: tuple[str, ...] = ("LABEL_0", "LABEL_1")
    # A linear-chain CRF over the logits (flaxtrainer.models.crf); written to config.json only when on.
    crf: bool = False
    extra_json: str = dataclasses.field(default="{}", repr=False)

    # Maps each supported `model_type` to its token-classification architecture name.
    architectures: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """What makes these hyper-parameters unusable (families extend the checks)."""
        if not self.labels:
            return ["a token-classification head needs at least one label"]
        if len(set(self.labels)) != len(self.labels):
            return [f"labels must be unique, got {list(self.labels)}"]
        return []

    def _check_ranges(self, positive: tuple[str, ...], rates: tuple[str, ...]) -> list[str]:
        """Problems with sizes that must be > 0 and dropout rates that must lie in [0, 1)."""
        problems = [
            f"{n}={getattr(self, n)} must be > 0" for n in positive if getattr(self, n) <= 0
        ]
        for name in rates:
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                problems.append(f"{name}={value} must be in [0, 1)")
        return problems

    def _check_heads(self, width: str, heads: str) -> list[str]:
        """The problem when the field `width` does not split into the field `heads` (> 0)."""
        size, count = getattr(self, width), getattr(self, heads)
        if count > 0 and size % count:
            return [f"{width}={size} is not divisible by {heads}={count}"]
        return []

    def _check_activations(self, *names: str) -> list[str]:
        """Problems with activation fields that name no supported activation."""
        return [
            f"{name}={getattr(self, name)!r} is not supported "
            f"(use one of {', '.join(SUPPORTED_ACTIVATIONS)})"
            for name in names
            if getattr(self, name) not in SUPPORTED_ACTIVATIONS
        ]

    # ---- labels -----------------------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    # ---- what generic code needs from every family -------------------------------------------
    @property
    def d_model(self) -> int:
        """Width of the encoder output (the classifier's input)."""
        raise NotImplementedError

    @property
    def classifier_dropout_rate(self) -> float:
        """Dropout applied to the encoder output before the classifier (as in Hugging Face)."""
        raise NotImplementedError

    @property
    def embedding_width(self) -> int:
        """Width of the embedding tables (ELECTRA and DeBERTa-v2 may project them to `d_model`)."""
        return self.d_model

    def kernel_init(self, std: float) -> Initializer:
        """How the family's Hugging Face model draws a kernel or an embedding table of std
        `std`: normal(0, std) (ModernBERT truncates it)."""
        return nnx.initializers.normal(std)

    @property
    def position_offset(self) -> int:
        """Position id of a sequence's first token (RoBERTa: `pad_token_id + 1`, else 0).

        Explicit `position_ids` index the position-embedding table directly (Hugging Face
        semantics), so a packer passes `position_offset + index within the sentence`.
        """
        return 0

    @property
    def max_length(self) -> int:
        """Longest sequence the position table covers with default positions."""
        return self.max_position_embeddings - self.position_offset

    @property
    def architecture(self) -> str:
        return self.architectures[self.model_type]

    # ---- config.json ------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> EncoderConfig:
        """Builds the config from a parsed `config.json`; `source` names the file in errors."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        names = set(fields) - {"labels", "extra_json"}
        # A null in config.json means "the default" unless the default itself is None.
        kwargs = {
            k: data[k]
            for k in names
            if k in data and (data[k] is not None or fields[k].default is None)
        }
        _check_types(fields, kwargs, source)
        extra = {k: v for k, v in data.items() if k not in names and k not in _NOT_EXTRA}
        try:
            return cls(
                **kwargs,
                labels=_labels_from_hf(data, source),
                extra_json=json.dumps(extra, sort_keys=True),
            )
        except ModelLoadError:
            raise
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: {exc}") from exc

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` content that transformers' `AutoConfig` reads back."""
        out: dict[str, Any] = json.loads(self.extra_json)
        for f in dataclasses.fields(self):
            if f.name not in ("labels", "extra_json"):
                out[f.name] = getattr(self, f.name)
        if not self.crf:  # config.json of a model without CRF stays as it always was
            del out["crf"]
        out["architectures"] = [self.architecture]
        out["id2label"] = {str(i): label for i, label in enumerate(self.labels)}
        out["label2id"] = self.label2id
        out["dtype"] = "float32"
        return out

    def with_labels(self, labels: tuple[str, ...] | list[str]) -> EncoderConfig:
        return dataclasses.replace(self, labels=tuple(labels))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransformerConfig(EncoderConfig):
    """The sizes of a Transformer encoder under the Hugging Face names that BERT, RoBERTa,
    ELECTRA, DeBERTa-v2 and ModernBERT share (defaults: BERT-base's), and their checks."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072

    @property
    def d_model(self) -> int:
        return self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def problems(self) -> list[str]:
        sizes = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
        )
        return (
            super().problems()
            + self._check_ranges(positive=sizes, rates=())
            + self._check_heads("hidden_size", "num_attention_heads")
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BertLikeConfig(TransformerConfig):
    """A post-LN encoder's hyper-parameters under BERT's `config.json` names (BERT, RoBERTa,
    ELECTRA, DeBERTa-v2): what the shared layers read (`models.layers.PostLNConfig`)."""

    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @property
    def attention_output_dropout(self) -> float:
        """Dropout after the attention's output projection: `hidden_dropout_prob`, as BERT."""
        return self.hidden_dropout_prob

    def problems(self) -> list[str]:
        rates = ("hidden_dropout_prob", "attention_probs_dropout_prob")
        return (
            super().problems()
            + self._check_ranges(positive=(), rates=rates)
            + self._check_activations("hidden_act")
        )


def alias(name: str) -> property:
    """A read-only property giving the field `name` under another name (as transformers'
    `attribute_map`), for code that reads the other family's names."""
    return property(operator.attrgetter(name), doc=f"`{name}`, under another name.")


def labels_from_id2label(id2label: Mapping[Any, str], source: str) -> tuple[str, ...]:
    """Orders an `id2label` mapping (int or numeric-string keys) into a tuple of labels."""
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{source}: id2label keys must be integers, got {list(id2label)}"
        ) from exc
    if sorted(by_id) != list(range(len(by_id))):
        raise ModelLoadError(
            f"{source}: id2label ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}"
        )
    return tuple(by_id[i] for i in range(len(by_id)))


_ACCEPTED_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "float | None": (int, float, type(None)),
    "int | None": (int, type(None)),
}


def _check_types(
    fields: Mapping[str, dataclasses.Field], values: Mapping[str, Any], source: str
) -> None:
    """Collects every wrongly typed hyper-parameter into one error."""
    problems = []
    for name, value in values.items():
        accepted = _ACCEPTED_TYPES.get(str(fields[name].type))
        bad_bool = isinstance(value, bool) and bool not in (accepted or ())
        if accepted is not None and (bad_bool or not isinstance(value, accepted)):
            problems.append(f"{name}={value!r} (expected {fields[name].type})")
    if problems:
        raise ModelLoadError(f"{source}: invalid values: " + ", ".join(problems))


def _labels_from_hf(data: Mapping[str, Any], source: str) -> tuple[str, ...]:
    if data.get("id2label"):
        return labels_from_id2label(data["id2label"], f"{source} (id2label)")
    if data.get("num_labels"):
        return tuple(f"LABEL_{i}" for i in range(int(data["num_labels"])))
    return ("LABEL_0", "LABEL_1")  # transformers' default for configs without labels
