"""The token-classification model shared by all families: encoder, dropout, linear head."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar, Literal, TypeAlias

import jax
import jax.numpy as jnp
from flax import nnx

from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.crf import CrfTransitions
from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.encoder import Encoder, EncoderInputs, SequenceModel
from flaxtrainer.models.layers import Build

#: How a new classifier head's kernel is drawn: normal(0, std) with std from
#: - "lecun": 1/sqrt(hidden size), the scale of Flax's default Dense init (lecun_normal), which
#:   Hugging Face's Flax NER script used; ~0.051 for a 384-wide MiniLM;
#: - "hf": what the family's Hugging Face PyTorch model uses (`initializer_range`, 0.02 for
#:   BERT-like models; 1/sqrt(hidden) for ModernBERT);
#: - a positive float: that std.
#: The bias is always zero. See benchmarks/README.md, "Head initialisation", for the study.
ClassifierInit: TypeAlias = Literal["lecun", "hf"] | float
CLASSIFIER_INIT_NAMES: tuple[str, ...] = ("lecun", "hf")
#: The default for a newly initialised head (`from_pretrained`, `--classifier_init`): the better
#: start in the head-initialisation study (benchmarks/README.md).
DEFAULT_CLASSIFIER_INIT: ClassifierInit = "lecun"


def parse_classifier_init(value: str | float) -> ClassifierInit:
    """`"lecun"`, `"hf"` or a positive std (a number or its text, e.g. `"0.03"`) -> ClassifierInit.

    Raises ValueError, saying what is accepted, for anything else (0, negative, nan, typos).
    """
    if isinstance(value, str) and value.strip().lower() in CLASSIFIER_INIT_NAMES:
        return value.strip().lower()  # type: ignore[return-value]
    try:
        std = float(value)
    except (TypeError, ValueError):
        std = math.nan
    if not (math.isfinite(std) and std > 0) or isinstance(value, bool):
        raise ValueError(
            f"classifier_init: expected 'lecun', 'hf' or a positive number (the std of the new "
            f"head's weights, e.g. 0.03), got {value!r}"
        )
    return std


class EncoderForTokenClassification(SequenceModel):
    """`encoder` (a family backbone) + dropout + `classifier`; `forward` returns float32 logits
    `[batch, seq, num_labels]`.

    Subclasses set `backbone` to the family's encoder class, and `prediction_head` to a module
    class when the family puts one between the encoder and the classifier (ModernBERT; built as
    `prediction_head(config, build)`, kept as `model.head`). `model.encoder(...)` takes the same
    inputs as the model and returns the last hidden state `[batch, seq, d_model]`.
    """

    backbone: ClassVar[type[Encoder]]
    prediction_head: ClassVar[type[nnx.Module] | None] = None

    def setup(self, config: EncoderConfig, build: Build) -> None:
        self.config = config
        self.dtype = build.dtype
        self.param_dtype = build.param_dtype
        self.encoder = self.backbone(
            config, dtype=build.dtype, param_dtype=build.param_dtype, rngs=build.rngs
        )
        self.dropout = Dropout(config.classifier_dropout_rate)
        # A whole random model is initialised as Hugging Face's PyTorch one; a head added for
        # fine-tuning goes through `reset_classifier` and its `init` instead.
        self.classifier = self._new_classifier(build, self.hf_classifier_std())
        if config.crf:
            self.crf = CrfTransitions(config.num_labels, param_dtype=build.param_dtype)
        if self.prediction_head is not None:
            self.head = self.prediction_head(config, build)

    def hf_classifier_std(self) -> float:
        """Std of the classifier kernel in the family's Hugging Face PyTorch model."""
        return self.config.initializer_range

    def classifier_std(self, init: ClassifierInit) -> float:
        """The std that `init` ("lecun", "hf" or a float) gives this model's classifier."""
        init = parse_classifier_init(init)
        if init == "lecun":
            return self.config.d_model**-0.5
        if init == "hf":
            return self.hf_classifier_std()
        return float(init)

    def _new_classifier(self, build: Build, std: float) -> nnx.Linear:
        """A `d_model -> num_labels` linear layer with a bias (every family's Hugging Face
        classifier has one): kernel from `config.kernel_init(std)`, bias zero."""
        return build.linear(self.config.d_model, self.config.num_labels, std=std)

    def reset_classifier(
        self,
        labels: Sequence[str] | None = None,
        *,
        rngs: nnx.Rngs,
        init: ClassifierInit = DEFAULT_CLASSIFIER_INIT,
    ) -> None:
        """Replaces the head (and the CRF layer, if any) with a newly initialised one (for
        `labels`, if given).

        Kernel ~ normal(0, `classifier_std(init)`), bias zero; see `ClassifierInit`.
        """
        if labels is not None:
            self.config = self.config.with_labels(tuple(labels))
        build = Build(self.dtype, self.param_dtype, rngs, self.config.kernel_init)
        self.classifier = self._new_classifier(build, self.classifier_std(init))
        self.reset_crf()

    def reset_crf(self, crf: bool | None = None) -> None:
        """A new, zero CRF layer for the current labels when `crf` (default: `config.crf`) is
        on; none when off. `crf` updates `config.crf`, which config.json carries."""
        if crf is not None and crf != self.config.crf:
            self.config = dataclasses.replace(self.config, crf=crf)
        if self.config.crf:
            self.crf = CrfTransitions(self.config.num_labels, param_dtype=self.param_dtype)
        elif hasattr(self, "crf"):
            del self.crf

    def head_params(self) -> dict[str, jax.Array]:
        """Parameters the task's loss and decoding use besides the logits: the CRF's
        transitions (`flaxtrainer.models.crf.PARAM_NAMES`), or `{}` for a plain softmax head."""
        return self.crf.params() if self.config.crf else {}

    def default_position_ids(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        return self.encoder.default_position_ids(input_ids, attention_mask)

    def forward(
        self, inputs: EncoderInputs, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        hidden = self.encoder.forward(inputs, deterministic=deterministic, rngs=rngs)
        hidden = self.dropout(self.head_features(hidden), deterministic=deterministic, rngs=rngs)
        return self.classifier(hidden).astype(jnp.float32)

    def head_features(self, hidden: jax.Array) -> jax.Array:
        """What the classifier reads from the encoder's output: the output itself, or what the
        family's `prediction_head` makes of it."""
        return hidden if self.prediction_head is None else self.head(hidden)
