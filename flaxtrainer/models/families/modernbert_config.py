"""ModernBERT hyper-parameters (`config.json` of model_type `modernbert`) and their checks.

Refused with `ModelLoadError`: rotary types other than the default (`rope_scaling`, non-default
`rope_parameters`), a `head_dim` other than `hidden_size / num_attention_heads`, layer types
other than full / sliding attention.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
from jax.nn.initializers import Initializer

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.config import TransformerConfig

GLOBAL, LOCAL = "full_attention", "sliding_attention"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModernBertConfig(TransformerConfig):
    """ModernBERT hyper-parameters, named as in Hugging Face `config.json`.

    `layer_types` is filled from `global_attn_every_n_layers` when the config does not list it.
    Newer `config.json` files give the rotary bases as `rope_parameters`; they are read into
    `global_rope_theta` / `local_rope_theta` (only the default rotary type is supported).
    """

    model_type: str = "modernbert"
    vocab_size: int = 50368
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
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
    def classifier_dropout_rate(self) -> float:
        return self.classifier_dropout

    def kernel_init(self, std: float) -> Initializer:
        """Hugging Face ModernBERT's init: normal(0, std) truncated at +-`initializer_cutoff_factor`
        std."""
        cutoff = self.initializer_cutoff_factor
        return jax.nn.initializers.truncated_normal(std, lower=-cutoff, upper=cutoff)

    @property
    def residual_std(self) -> float:
        """Init std of the layers writing into the residual stream."""
        return self.initializer_range / (2.0 * self.num_hidden_layers) ** 0.5

    @property
    def sliding_window(self) -> int:
        """Half width of the local window (Hugging Face's `config.sliding_window`)."""
        return self.local_attention // 2

    def problems(self) -> list[str]:
        problems = super().problems() + self._check_ranges(
            positive=(
                "local_attention",
                "global_attn_every_n_layers",
                "global_rope_theta",
                "local_rope_theta",
            ),
            rates=("attention_dropout", "embedding_dropout", "mlp_dropout", "classifier_dropout"),
        )
        heads = self.num_attention_heads
        divisible = not self._check_heads("hidden_size", "num_attention_heads")
        if divisible and heads > 0 and self.head_dim % 2:
            problems.append(f"rotary embeddings need an even head size, got {self.head_dim}")
        problems += self._check_activations("hidden_activation", "classifier_activation")
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
