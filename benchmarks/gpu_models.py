"""The encoders `gpu.py` can time, and their model FLOPs per token (for MFU).

Three architectures, randomly initialised (no download), each at its published size or, with
`--tiny`, at the same tiny dimensions (hidden 32, 2 layers, 2 heads; ModernBERT 3 layers so a
global and two local layers occur, with an 8-token window so the window bites at length 32):

  bert-base        `BertConfig` defaults (bert-base-uncased: 12 x 768, 12 heads, 3072, 30522)
  deberta-v3-base  microsoft/deberta-v3-base: 12 x 768, 12 heads, 3072, vocab 128100, relative
                   attention over 256 log buckets (`max_relative_positions` -1), c2p + p2c,
                   shared position keys, LayerNorm'd relative embeddings, no absolute positions,
                   no token types
  modernbert-base  answerdotai/ModernBERT-base (= `ModernBertConfig` defaults = transformers'
                   `ModernBertConfig` defaults): 22 x 768, 12 heads, GeGLU 1152, vocab 50368,
                   every 3rd layer global (from 0), the others local (window 128: keys within
                   64 positions), rotary bases 160000 / 10000, no biases

Model FLOPs per real token, training (forward + backward = 3 x forward), `flops_per_token`:

  6 N                             N = matmul parameters: every parameter but the embedding
                                  tables (`nnx.Embed`: lookups) and DeBERTa's separate position
                                  projections (below); GeGLU's doubled `Wi` is in N
  + sum over layers 12 h C_l      attention scores QK^T and values PV: 2 x 2 h C_l forward, as
                                  in PaLM's appendix B; C_l = keys per query, token-weighted
                                  over the sentences: sum(pairs) / sum(lengths)

  C_l, global layer: L per query, so C = sum(L^2) / sum(L) over sentence lengths L (packed
  sentences attend only to themselves, so a row's width does not count).
  C_l, ModernBERT local layer: the pairs inside the window, exactly: query i sees keys with
  |i - j| <= w = local_attention / 2 (at most local_attention + 1 keys), so a sentence has
  L + 2 x sum_{d=1..min(w, L-1)} (L - d) pairs. The XLA attention computes the full L x L scores
  and masks the rest; that masked work is not model work and is not counted (it lowers MFU, as
  padding does). At L <= 65 the window covers the sentence and C = L.

  DeBERTa (disentangled attention), per layer, added:
  + 12 h C                        c2p and p2c: each adds a score term q_i . Kr(delta(i, j)) and
                                  k_j . Qr(delta(j, i)) for every (query, key) pair, a score
                                  matmul the size of QK^T: 2 terms x 2 h C forward, x 3
  + 6 x 2k x h^2 x T / tokens     per term, the projection of the 2k = 512 relative-position
                                  embeddings through the (shared) key / query weights, once per
                                  step of `tokens` real tokens (small: ~0.25% at base size,
                                  batch 256 x 128); T = 2 terms

  The per-pair count is the model's arithmetic. The implementation (as transformers') instead
  multiplies every query by all 2k bucket embeddings and gathers, 2 x 2 h x 2k forward per
  token per term: at 2k = 512 and L = 128 that is 4x the counted c2p / p2c work, so the
  hardware does more than the MFU credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MODELS = ("bert-base", "deberta-v3-base", "modernbert-base")

LABELS = {"bert-base": "BERT", "deberta-v3-base": "DeBERTa-v3", "modernbert-base": "ModernBERT"}


@dataclass(frozen=True)
class Shape:
    """Model and batch sizes of a run."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    global_batch: int
    seq_len: int


BERT_BASE = Shape(768, 12, 12, 3072, 30522, global_batch=256, seq_len=128)
DEBERTA_V3_BASE = Shape(768, 12, 12, 3072, 128100, global_batch=256, seq_len=128)
MODERNBERT_BASE = Shape(768, 22, 12, 1152, 50368, global_batch=256, seq_len=128)
TINY = Shape(32, 2, 2, 64, 1000, global_batch=8, seq_len=32)

FULL_SHAPES = {
    "bert-base": BERT_BASE,
    "deberta-v3-base": DEBERTA_V3_BASE,
    "modernbert-base": MODERNBERT_BASE,
}
TINY_SHAPES = {
    "bert-base": TINY,
    "deberta-v3-base": TINY,  # equal to BERT's, so the two FLOPs counts compare
    "modernbert-base": Shape(32, 3, 2, 64, 1000, global_batch=8, seq_len=32),
}

#: Architecture settings beyond `Shape`: microsoft/deberta-v3-base's config.json.
DEBERTA_V3 = dict(
    relative_attention=True,
    position_buckets=256,
    max_relative_positions=-1,
    pos_att_type=("p2c", "c2p"),
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
    max_position_embeddings=512,
    type_vocab_size=0,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    layer_norm_eps=1e-7,
)


def base_shape(model: str, tiny: bool) -> Shape:
    return (TINY_SHAPES if tiny else FULL_SHAPES)[model]


def build_model(model: str, shape: Shape, labels: tuple[str, ...], *, tiny: bool, dtype, seed):
    """A randomly initialised token classifier of architecture `model` at `shape`."""
    from flax import nnx

    from flaxtrainer.models import (
        BertConfig,
        BertForTokenClassification,
        DebertaV2Config,
        DebertaV2ForTokenClassification,
        ModernBertConfig,
        ModernBertForTokenClassification,
    )

    dims = dict(
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        vocab_size=shape.vocab_size,
        labels=labels,
    )
    if model == "bert-base":
        config = BertConfig(**dims, max_position_embeddings=max(512, shape.seq_len))
        cls = BertForTokenClassification
    elif model == "deberta-v3-base":
        settings = {**DEBERTA_V3, "max_position_embeddings": max(512, shape.seq_len)}
        config = DebertaV2Config(**dims, **settings)
        cls = DebertaV2ForTokenClassification
    elif model == "modernbert-base":
        # ModernBertConfig's defaults are ModernBERT-base's; the tiny model shrinks the window.
        config = ModernBertConfig(**dims, **({"local_attention": 8} if tiny else {}))
        cls = ModernBertForTokenClassification
    else:
        raise ValueError(f"unknown model {model!r} (use one of {', '.join(MODELS)})")
    return cls(config, dtype=dtype, rngs=nnx.Rngs(seed))


def parameter_counts(model) -> tuple[int, int]:
    """(all parameters, matmul parameters): the latter without embedding tables and without
    DeBERTa's separate position projections (applied per step to the 2k position embeddings,
    not per token; counted by `flops_per_token` instead)."""
    import jax
    from flax import nnx

    total = matmul = 0
    for path, x in jax.tree.leaves_with_path(nnx.state(model, nnx.Param)):
        name = jax.tree_util.keystr(path)
        total += x.size
        if "['embedding']" not in name and not any(p in name for p in ("pos_key", "pos_query")):
            matmul += x.size
    return total, matmul


def pairs_in_window(length: int, half_window: int | None) -> int:
    """(query, key) pairs of one sentence of `length` tokens: all of them, or those with
    |i - j| <= `half_window`."""
    if half_window is None or half_window >= length - 1:
        return length * length
    w = half_window
    return length + 2 * (w * length - w * (w + 1) // 2)


def keys_per_query(lengths: list[int], half_window: int | None = None) -> float:
    """Token-weighted mean number of keys a query attends to over `lengths` (C in the docstring)."""
    pairs = sum(pairs_in_window(int(n), half_window) for n in lengths)
    return pairs / float(np.sum(lengths))


def flops_per_token(
    config: Any, matmul_params: int, lengths: list[int], tokens_per_step: float
) -> dict[str, float]:
    """Training model FLOPs per real token, by term, and their `total` (module docstring).

    `config` is the model's flaxtrainer config (its `model_type` picks the terms), `lengths` the
    sentence lengths of the run and `tokens_per_step` the real tokens of one optimizer step.
    """
    hidden, layers = config.hidden_size, config.num_hidden_layers
    terms = {"matmul": 6.0 * matmul_params}
    if config.model_type == "modernbert":
        windows = [
            config.sliding_window if t == "sliding_attention" else None for t in config.layer_types
        ]
    else:
        windows = [None] * layers
    context = {w: keys_per_query(lengths, w) for w in set(windows)}
    terms["attention"] = sum(12.0 * hidden * context[w] for w in windows)
    if config.model_type == "deberta-v2" and config.relative_attention:
        kinds = len(config.pos_att_type)  # c2p and / or p2c
        terms["disentangled_scores"] = kinds * layers * 6.0 * hidden * context[None]
        rows = 2 * config.relative_span
        terms["position_projections"] = kinds * layers * 6.0 * rows * hidden**2 / tokens_per_step
    terms["total"] = sum(terms.values())
    return terms
