"""DeBERTa-v2 hyper-parameters (`config.json` of model_type `deberta-v2`) and their checks."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from flaxtrainer.models.config import BertLikeConfig

POS_ATT_TYPES = ("c2p", "p2c")
_NORM_REL_EBD = ("none", "layer_norm")


def _split_bar_list(value: Any) -> tuple[str, ...]:
    """`"p2c|c2p"`, `["p2c", "c2p"]` or None as a tuple of lower-case names (as transformers)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split("|")
    return tuple(str(v).strip().lower() for v in value if str(v).strip())


@dataclasses.dataclass(frozen=True, kw_only=True)
class DebertaV2Config(BertLikeConfig):
    """DeBERTa-v2 hyper-parameters, named (and defaulted) as transformers' `DebertaV2Config`.

    `pos_att_type` is kept as a tuple (hashable); `config.json` may spell it `"p2c|c2p"`.
    `embedding_size` defaults to `hidden_size`; `attention_head_size`, if set, must be
    `hidden_size // num_attention_heads`. transformers' default `position_biased_input=True` is
    kept (so a `config.json` without the key means what it means there) but refused: build v3-style
    configs in Python with `position_biased_input=False`.
    """

    model_type: str = "deberta-v2"
    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    position_biased_input: bool = True  # transformers' default; only False is supported
    pos_att_type: tuple[str, ...] = ()
    share_att_key: bool = False
    norm_rel_ebd: str = "none"
    embedding_size: int | None = None
    attention_head_size: int | None = None
    conv_kernel_size: int = 0
    conv_groups: int = 1
    conv_act: str = "tanh"

    architectures: ClassVar = {"deberta-v2": "DebertaV2ForTokenClassification"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "pos_att_type", _split_bar_list(self.pos_att_type))
        super().__post_init__()

    @property
    def classifier_dropout_rate(self) -> float:
        return self.hidden_dropout_prob  # DebertaV2ForTokenClassification's head dropout

    @property
    def embedding_width(self) -> int:
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def relative_span(self) -> int:
        """Half the number of relative-position embeddings (transformers' `pos_ebd_size`)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_distance

    @property
    def max_relative_distance(self) -> int:
        """`max_relative_positions`, which transformers reads as `max_position_embeddings` if < 1."""
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

    def problems(self) -> list[str]:
        problems = super().problems()
        for name in ("embedding_size", "attention_head_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{name}={value} must be > 0")
        if self.type_vocab_size < 0:
            problems.append(f"type_vocab_size={self.type_vocab_size} must be >= 0")
        if (
            not self._check_heads("hidden_size", "num_attention_heads")
            and self.attention_head_size not in (None, self.head_dim)
            and self.num_attention_heads > 0
        ):
            # transformers' attention output projection is hidden_size wide, so no other value
            # gives a working model there either.
            problems.append(
                f"attention_head_size={self.attention_head_size}: only hidden_size / "
                f"num_attention_heads = {self.head_dim} is supported"
            )
        problems += self._check_activations("conv_act")
        unknown = [t for t in self.pos_att_type if t not in POS_ATT_TYPES]
        if unknown:
            problems.append(
                f"pos_att_type {list(unknown)} is not supported (DeBERTa-v2 uses a subset of "
                f"{list(POS_ATT_TYPES)})"
            )
        norms = _split_bar_list(self.norm_rel_ebd)
        if any(n not in _NORM_REL_EBD for n in norms):
            problems.append(
                f"norm_rel_ebd={self.norm_rel_ebd!r} is not supported (use 'none' or 'layer_norm')"
            )
        if self.relative_attention and self.position_buckets == 1:
            problems.append("position_buckets=1 is not usable (use >= 2, or <= 0 for no buckets)")
        if self.position_biased_input:
            # No released DeBERTa-v2/v3 model adds absolute positions (their checkpoints may still
            # hold an unused position table, ignored on load as transformers does).
            problems.append(
                "position_biased_input=true (absolute position embeddings) is not supported; "
                "DeBERTa-v2/v3 checkpoints use relative positions only"
            )
        if self.conv_kernel_size < 0 or (self.conv_kernel_size and self.conv_kernel_size % 2 == 0):
            problems.append(
                f"conv_kernel_size={self.conv_kernel_size}: only 0 (no convolution) or an odd "
                "size is supported"
            )
        if self.conv_kernel_size and self.conv_groups != 1:
            problems.append(f"conv_groups={self.conv_groups}: only 1 is supported")
        return problems

    @property
    def normalize_rel_embeddings(self) -> bool:
        return "layer_norm" in _split_bar_list(self.norm_rel_ebd)

    def to_hf_dict(self) -> dict[str, Any]:
        out = super().to_hf_dict()
        out["pos_att_type"] = list(self.pos_att_type)
        # transformers reads these with getattr(config, name, default): an explicit null would
        # replace the default, so unset ones are left out.
        for name in ("embedding_size", "attention_head_size"):
            if out.get(name) is None:
                out.pop(name, None)
        return out
