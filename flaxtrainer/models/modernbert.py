"""ModernBERT: rotary positions, alternating global / sliding-window attention, GeGLU, pre-LN.

Follows transformers' `ModernBertForTokenClassification` (answerdotai/ModernBERT-base/large):

- embeddings: token table, LayerNorm, dropout (no position table: positions enter as rotary
  embeddings in every attention layer, with `global_rope_theta` in global layers and
  `local_rope_theta` in local ones);
- pre-LN layers `x + attn(attn_norm(x))`, `x + mlp(mlp_norm(x))`; layer 0 has no `attn_norm`
  (the embedding norm precedes it); the MLP is GeGLU (`Wi` gives `[input | gate]`,
  `Wo(act(input) * gate)`);
- `layer_types` (or, in older configs, every `global_attn_every_n_layers`-th layer from 0) attend
  globally, the others within a window: query i sees key j iff `|i - j| <= local_attention // 2`;
- a final LayerNorm, then the prediction head `norm(act(dense(x)))`, dropout and the classifier.

Packed rows: `position_ids` restart per sentence (the packer's `segment_position_ids`), so
rotary positions restart too (rotary scores depend on position differences only, so this gives
the same result as positions counted over the row; the segment mask keeps sentences apart). The
local window is measured on row indices (as in Hugging Face) combined with the segment mask:
inside one contiguous sentence `|i - j|` equals the distance of the positions, and keys of other
sentences are masked anyway, so each sentence sees exactly the window it would see on its own
row. The window is handed to `jax.nn.dot_product_attention` as `local_window_size`.

Not supported (refused with `ModelLoadError`): rotary types other than the default (`rope_scaling`,
non-default `rope_parameters`), a `head_dim` other than `hidden_size / num_attention_heads`, layer
types other than full / sliding attention. Base-model exports (`ModernBertModel` alone, without
`head.*`) fail to load with "missing tensor head.dense.weight"; the hub checkpoints are masked-LM
ones, which carry the head.

Checkpoint layout: the encoder lives under `model.` as in Hugging Face; the prediction head
(`head.dense`, `head.norm`) sits outside that prefix but is part of every ModernBERT checkpoint
with a head (masked-LM ones included), so it is loaded like the encoder and only `classifier` is
the token-classification head that is reinitialised for new labels.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import DTypeLike

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.config import EncoderConfig
from flaxtrainer.models.dropout import Dropout
from flaxtrainer.models.hf_weights import (
    Transform,
    WeightRule,
    WeightTable,
    embedding,
    layer_norm,
    linear,
)
from flaxtrainer.models.layers import (
    SUPPORTED_ACTIVATIONS,
    activation,
    apply_rotary,
    attention,
    attention_pairs,
    ones_mask,
    rotary_tables,
    sequential_position_ids,
)
from flaxtrainer.models.layers import layer_norm as make_layer_norm
from flaxtrainer.models.registry import ModelFamily, register_family
from flaxtrainer.models.token_classification import EncoderForTokenClassification

GLOBAL, LOCAL = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModernBertConfig(EncoderConfig):
    """ModernBERT hyper-parameters, named as in Hugging Face `config.json`.

    `layer_types` is filled from `global_attn_every_n_layers` when the config does not list it.
    Newer `config.json` files give the rotary bases as `rope_parameters`; they are read into
    `global_rope_theta` / `local_rope_theta` (only the default rotary type is supported).
    """

    model_type: str = "modernbert"
    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_activation: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_cutoff_factor: float = 2.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int = 50283
    attention_bias: bool = False
    attention_dropout: float = 0.0
    global_attn_every_n_layers: int = 3
    layer_types: tuple[str, ...] = ()
    local_attention: int = 128
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"

    architectures: ClassVar = {"modernbert": "ModernBertForTokenClassification"}

    def __post_init__(self) -> None:
        types = tuple(self.layer_types or ())
        if not types and self.global_attn_every_n_layers > 0:
            every = self.global_attn_every_n_layers
            types = tuple(LOCAL if i % every else GLOBAL for i in range(self.num_hidden_layers))
        object.__setattr__(self, "layer_types", types)
        super().__post_init__()

    @property
    def d_model(self) -> int:
        return self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def classifier_dropout_rate(self) -> float:
        return self.classifier_dropout

    @property
    def sliding_window(self) -> int:
        """Half width of the local window (Hugging Face's `config.sliding_window`)."""
        return self.local_attention // 2

    def problems(self) -> list[str]:
        problems = super().problems() + self._check_ranges(
            positive=(
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "max_position_embeddings",
                "local_attention",
                "global_attn_every_n_layers",
                "global_rope_theta",
                "local_rope_theta",
            ),
            rates=("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"),
        )
        heads = self.num_attention_heads
        if heads > 0 and self.hidden_size % heads:
            problems.append(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={heads}"
            )
        elif heads > 0 and self.head_dim % 2:
            problems.append(f"rotary embeddings need an even head size, got {self.head_dim}")
        for name in ("hidden_activation", "classifier_activation"):
            if getattr(self, name) not in SUPPORTED_ACTIVATIONS:
                problems.append(
                    f"{name}={getattr(self, name)!r} is not supported "
                    f"(use one of {', '.join(SUPPORTED_ACTIVATIONS)})"
                )
        if len(self.layer_types) != self.num_hidden_layers:
            problems.append(
                f"layer_types lists {len(self.layer_types)} layers, "
                f"num_hidden_layers={self.num_hidden_layers}"
            )
        unknown = sorted({str(t) for t in self.layer_types} - {GLOBAL, LOCAL})
        if unknown:
            problems.append(f"layer_types {unknown} are not supported (use {GLOBAL!r}, {LOCAL!r})")
        extra = json.loads(self.extra_json)
        if extra.get("head_dim") not in (None, self.head_dim if heads > 0 else None):
            problems.append(
                f"head_dim={extra['head_dim']} differs from hidden_size / num_attention_heads"
            )
        if extra.get("rope_scaling") is not None:
            problems.append(f"rope_scaling={extra['rope_scaling']!r} is not supported")
        return problems

    @classmethod
    def from_hf_dict(cls, data: Mapping[str, Any], source: str = "config.json") -> ModernBertConfig:
        """Also reads `rope_parameters` (transformers 5) into the two rotary bases."""
        data = dict(data)
        rope = data.pop("rope_parameters", None)
        if rope is not None:
            for layer_type, field in ((GLOBAL, "global_rope_theta"), (LOCAL, "local_rope_theta")):
                params = rope.get(layer_type) if isinstance(rope, Mapping) else None
                if params is None:
                    continue
                if not isinstance(params, Mapping) or params.get("rope_type", "default") != (
                    "default"
                ):
                    raise ModelLoadError(
                        f"{source}: rope_parameters[{layer_type!r}]={params!r}: only the default "
                        "rotary embedding (rope_type 'default') is supported"
                    )
                unsupported = sorted(set(params) - {"rope_type", "rope_theta"})
                if unsupported:
                    raise ModelLoadError(
                        f"{source}: rope_parameters[{layer_type!r}] sets {unsupported}, "
                        "which are not supported"
                    )
                if "rope_theta" in params:
                    data[field] = params["rope_theta"]
        if data.get("layer_types") is not None:
            if not isinstance(data["layer_types"], list | tuple):
                raise ModelLoadError(f"{source}: layer_types must be a list of layer types")
            data["layer_types"] = tuple(data["layer_types"])
        return super().from_hf_dict(data, source)  # type: ignore[return-value]

    def to_hf_dict(self) -> dict[str, Any]:
        out = super().to_hf_dict()
        out["layer_types"] = list(self.layer_types)
        out["rope_parameters"] = {
            GLOBAL: {"rope_type": "default", "rope_theta": self.global_rope_theta},
            LOCAL: {"rope_type": "default", "rope_theta": self.local_rope_theta},
        }
        return out


# ---- modules --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Build:
    """Makes layers initialised like Hugging Face ModernBERT (normal truncated at +-cutoff std)."""

    config: ModernBertConfig
    dtype: DTypeLike
    param_dtype: DTypeLike
    rngs: nnx.Rngs

    def init(self, std: float) -> jax.nn.initializers.Initializer:
        cutoff = self.config.initializer_cutoff_factor
        return jax.nn.initializers.truncated_normal(std, lower=-cutoff, upper=cutoff)

    @property
    def out_std(self) -> float:
        """Std of the layers writing into the residual stream."""
        return self.config.initializer_range / (2.0 * self.config.num_hidden_layers) ** 0.5

    def linear(
        self, n_in: int, n_out: int, *, use_bias: bool, std: float | None = None
    ) -> nnx.Linear:
        return nnx.Linear(
            n_in,
            n_out,
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.init(self.config.initializer_range if std is None else std),
            bias_init=nnx.initializers.zeros_init(),
            rngs=self.rngs,
        )

    def norm(self) -> nnx.LayerNorm:
        return make_layer_norm(
            self.config.hidden_size,
            epsilon=self.config.norm_eps,
            use_bias=self.config.norm_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
        )


class ModernBertAttention(nnx.Module):
    """Fused q/k/v projection, rotary positions, (windowed) attention, output projection."""

    def __init__(self, build: _Build, *, local: bool):
        config, width = build.config, build.config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.local_window = config.sliding_window if local else None
        self.Wqkv = build.linear(width, 3 * width, use_bias=config.attention_bias)
        self.Wo = build.linear(width, width, use_bias=config.attention_bias, std=build.out_std)
        self.probs_dropout = Dropout(config.attention_dropout, layout="attention")
        self.out_dropout = Dropout(config.attention_dropout)

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        rotary: tuple[jax.Array, jax.Array],
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        batch, seq, _ = x.shape
        qkv = self.Wqkv(x).reshape(batch, seq, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        context = attention(
            q,
            k,
            v,
            pairs,
            dropout=self.probs_dropout,
            deterministic=deterministic,
            rngs=rngs,
            local_window=self.local_window,
        )
        out = self.Wo(context.reshape(batch, seq, -1))
        return self.out_dropout(out, deterministic=deterministic, rngs=rngs)


class ModernBertMLP(nnx.Module):
    """GeGLU feed-forward: `Wo(dropout(act(input) * gate))` with `[input | gate] = Wi(x)`."""

    def __init__(self, build: _Build):
        config = build.config
        width, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.Wi = build.linear(width, 2 * inner, use_bias=bias)
        self.Wo = build.linear(inner, width, use_bias=bias, std=build.out_std)
        self.dropout = Dropout(config.mlp_dropout)
        self.activation = config.hidden_activation

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
        hidden, gate = jnp.split(self.Wi(x), 2, axis=-1)
        hidden = activation(self.activation)(hidden) * gate
        return self.Wo(self.dropout(hidden, deterministic=deterministic, rngs=rngs))


class ModernBertLayer(nnx.Module):
    """Pre-LN layer; layer 0 has no attention norm (Hugging Face uses an Identity there)."""

    def __init__(self, build: _Build, index: int):
        self.attn_norm: nnx.LayerNorm | None = nnx.data(build.norm() if index > 0 else None)
        self.local = build.config.layer_types[index] == LOCAL
        self.attn = ModernBertAttention(build, local=self.local)
        self.mlp_norm = build.norm()
        self.mlp = ModernBertMLP(build)

    def __call__(
        self,
        x: jax.Array,
        pairs: jax.Array,
        rotary: tuple[jax.Array, jax.Array],
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jax.Array:
        normed = x if self.attn_norm is None else self.attn_norm(x)
        x = x + self.attn(normed, pairs, rotary, deterministic=deterministic, rngs=rngs)
        return x + self.mlp(self.mlp_norm(x), deterministic=deterministic, rngs=rngs)


class ModernBertEmbeddings(nnx.Module):
    """Token embeddings, LayerNorm, dropout."""

    def __init__(self, build: _Build):
        config = build.config
        self.tok_embeddings = nnx.Embed(
            config.vocab_size,
            config.hidden_size,
            param_dtype=build.param_dtype,
            embedding_init=build.init(config.initializer_range),
            rngs=build.rngs,
        )
        self.norm = build.norm()
        self.dropout = Dropout(config.embedding_dropout)

    def __call__(
        self, input_ids: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jax.Array:
        x = self.norm(self.tok_embeddings(input_ids))
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class ModernBertModel(nnx.Module):
    """The ModernBERT encoder; returns the last hidden state (after `final_norm`)."""

    def __init__(
        self,
        config: ModernBertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        build = _Build(config, dtype, param_dtype, rngs)
        self.head_dim = config.head_dim
        self.rope_theta = (config.global_rope_theta, config.local_rope_theta)
        self.embeddings = ModernBertEmbeddings(build)
        self.layers = nnx.List([ModernBertLayer(build, i) for i in range(config.num_hidden_layers)])
        self.final_norm = build.norm()

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jax.Array:
        """`token_type_ids` is accepted for a uniform signature and ignored."""
        del token_type_ids
        if attention_mask is None:
            attention_mask = ones_mask(input_ids)
        if position_ids is None:
            position_ids = sequential_position_ids(input_ids)
        x = self.embeddings(input_ids, deterministic=deterministic, rngs=rngs)
        pairs = attention_pairs(attention_mask)
        # (global, local) tables, indexed by `layer.local`.
        rotary = [rotary_tables(position_ids, self.head_dim, theta) for theta in self.rope_theta]
        for layer in self.layers:
            x = layer(x, pairs, rotary[layer.local], deterministic=deterministic, rngs=rngs)
        return self.final_norm(x)


class ModernBertPredictionHead(nnx.Module):
    """`norm(act(dense(x)))`, applied to every token before the classifier."""

    def __init__(self, build: _Build):
        config = build.config
        self.dense = build.linear(
            config.hidden_size,
            config.hidden_size,
            use_bias=config.classifier_bias,
            std=build.out_std,
        )
        self.norm = build.norm()
        self.activation = config.classifier_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(activation(self.activation)(self.dense(x)))


class ModernBertForTokenClassification(EncoderForTokenClassification):
    """`encoder` (the Hugging Face `model`), prediction `head`, dropout, `classifier`."""

    backbone = ModernBertModel

    def __init__(
        self,
        config: ModernBertConfig,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.head = ModernBertPredictionHead(_Build(config, dtype, param_dtype, rngs))

    def hf_classifier_std(self) -> float:
        """Hugging Face's ModernBERT draws its classifier with std 1/sqrt(hidden)."""
        return self.config.d_model**-0.5

    def _new_classifier(self, rngs: nnx.Rngs, std: float) -> nnx.Linear:
        build = _Build(self.config, self.dtype, self.param_dtype, rngs)
        # Hugging Face's classifier always has a bias.
        width = self.config.d_model
        return build.linear(width, self.config.num_labels, use_bias=True, std=std)

    def head_features(self, hidden: jax.Array) -> jax.Array:
        """ModernBERT's prediction head (dense, activation, norm) before the classifier."""
        return self.head(hidden)


# ---- checkpoint layout ----------------------------------------------------------------------------


def _find(
    rules: tuple[WeightRule, ...], name: str, *, to_nnx: bool
) -> tuple[str, Transform] | None:
    for rule in rules:
        regex, target = (rule.hf_regex, rule.nnx) if to_nnx else (rule.nnx_regex, rule.hf)
        found = regex.fullmatch(name)
        if found:
            return target.format(**found.groupdict()), rule.transform
    return None


@dataclasses.dataclass(frozen=True)
class ModernBertWeightTable(WeightTable):
    """A :class:`WeightTable` plus `outside` rules: keys outside the base-model prefix that are
    loaded like the encoder (kept when the classifier is reinitialised). NNX paths of `outside`
    rules are relative to the token-classification model."""

    outside: tuple[WeightRule, ...] = ()

    def to_nnx(self, key: str) -> tuple[str, Transform, bool] | None:
        found = _find(self.outside, key, to_nnx=True)
        if found is not None:
            return found[0], found[1], False
        return super().to_nnx(key)

    def to_hf(self, path: str) -> tuple[str, Transform]:
        found = _find(self.outside, path, to_nnx=False)
        return found if found is not None else super().to_hf(path)


_LAYER = "layers.{layer}"
# Linear layers and LayerNorms with optional biases: a rule for a bias the model does not have
# never matches a parameter, and a checkpoint bias without a parameter is reported as unexpected.
_ENCODER_RULES = (
    *embedding("embeddings.tok_embeddings", "embeddings.tok_embeddings"),
    *layer_norm("embeddings.norm", "embeddings.norm"),
    *layer_norm(f"{_LAYER}.attn_norm", f"{_LAYER}.attn_norm"),
    *linear(f"{_LAYER}.attn.Wqkv", f"{_LAYER}.attn.Wqkv"),
    *linear(f"{_LAYER}.attn.Wo", f"{_LAYER}.attn.Wo"),
    *layer_norm(f"{_LAYER}.mlp_norm", f"{_LAYER}.mlp_norm"),
    *linear(f"{_LAYER}.mlp.Wi", f"{_LAYER}.mlp.Wi"),
    *linear(f"{_LAYER}.mlp.Wo", f"{_LAYER}.mlp.Wo"),
    *layer_norm("final_norm", "final_norm"),
)

FAMILY = register_family(
    ModelFamily(
        name="modernbert",
        config_cls=ModernBertConfig,
        model_cls=ModernBertForTokenClassification,
        weights=ModernBertWeightTable(
            "model.",
            _ENCODER_RULES,
            outside=(*linear("head.dense", "head.dense"), *layer_norm("head.norm", "head.norm")),
        ),
    )
)
