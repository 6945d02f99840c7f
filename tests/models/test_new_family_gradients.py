"""Gradients of the new families match PyTorch's, parameter by parameter.

A fixed random weighting of the real tokens' logits is the loss on both sides; every Flax
gradient is mapped to its Hugging Face key and layout through the family's weight table (the
same table that loads and saves checkpoints) and compared with `param.grad` in PyTorch.
"""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx
from hf_reference import randomize_

from flaxtrainer.models import from_pretrained
from flaxtrainer.models.hf_weights import export_weights
from flaxtrainer.models.registry import family_of

LABELS = {0: "O", 1: "B-PER", 2: "I-PER"}
COMMON = dict(id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, vocab_size=99)
SEQ, LENGTHS = 12, (12, 7, 3)

DEBERTA_V3 = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    relative_attention=True,
    pos_att_type=["p2c", "c2p"],
    position_buckets=4,
    max_relative_positions=-1,
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
    type_vocab_size=0,
)
MODERNBERT = dict(
    hidden_size=32,
    intermediate_size=24,
    num_hidden_layers=3,
    num_attention_heads=4,
    global_attn_every_n_layers=2,
    local_attention=4,  # +-2 tokens: shorter than the 12-token rows
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
)


def _torch_model(family: str):
    import torch
    import transformers

    if family == "deberta-v2":
        config = transformers.DebertaV2Config(**DEBERTA_V3, **COMMON)
        cls = transformers.DebertaV2ForTokenClassification
    else:
        config = transformers.ModernBertConfig(**MODERNBERT, **COMMON, attn_implementation="eager")
        cls = transformers.ModernBertForTokenClassification
    torch.manual_seed(0)
    return randomize_(cls(config))


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert"])
def test_gradients_match_pytorch(family, tmp_path):
    import jax.numpy as jnp
    import torch

    torch_model = _torch_model(family)
    torch_model.save_pretrained(tmp_path)
    model = from_pretrained(tmp_path)

    rng = np.random.default_rng(0)
    mask = (np.arange(SEQ)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(3, 99, mask.shape), 0).astype(np.int32)
    weights = (rng.standard_normal((*mask.shape, len(LABELS))) * mask[..., None]).astype(np.float32)

    out = torch_model(input_ids=torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long())
    (out.logits * torch.tensor(weights)).sum().backward()
    reference = {
        name: p.grad.numpy() for name, p in torch_model.named_parameters() if p.grad is not None
    }

    def loss(m):
        return jnp.sum(m(jnp.asarray(ids), jnp.asarray(mask)) * weights)

    grads = nnx.grad(loss)(model)
    nnx.update(model, grads)  # the model now holds its gradients: export them as HF tensors
    ours = export_weights(model, family_of(model).weights)

    compared = 0
    for key, grad in ours.items():
        expected = reference.get(key, np.zeros_like(grad))  # no torch grad: an unused tensor
        assert np.all(np.isfinite(grad)), key
        scale = max(np.abs(expected).max(), 1e-3)
        assert np.abs(grad - expected).max() <= 1e-4 * scale + 1e-6, key
        compared += int(np.abs(expected).max() > 0)
    assert compared >= 10  # real gradients were compared, not only zeros
    assert set(reference) <= set(ours)
