"""Tiny random PyTorch reference models (Hugging Face folders) and padded batches for the model tests."""

from __future__ import annotations

import dataclasses

import numpy as np

VOCAB = 99
SEQ = 9
LENGTHS = (9, 5, 2)  # one full row, two padded rows

# Small configs per model_type (hidden 32, 2 layers, 4 heads); ELECTRA with narrower embeddings.
FAMILY_KWARGS = {
    "bert": {},
    "roberta": {"type_vocab_size": 1},
    "xlm-roberta": {"type_vocab_size": 1},
    "camembert": {"type_vocab_size": 1},
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37},
    "electra": {"embedding_size": 16, "hidden_act": "gelu_new"},
}
MODEL_TYPES = tuple(FAMILY_KWARGS)


def tiny_hf_config(model_type: str, **overrides):
    from transformers import AutoConfig

    kwargs = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        id2label={0: "O", 1: "B-PER", 2: "I-PER"},
        label2id={"O": 0, "B-PER": 1, "I-PER": 2},
    )
    kwargs.update(FAMILY_KWARGS[model_type])
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def randomize_(model, seed: int = 0):
    """Weights far from HF's tiny init, so attention patterns and layouts really matter."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm_scale = name.endswith("weight") and param.ndim == 1
            param.copy_(
                1.0 + 0.1 * noise if is_norm_scale else (0.2 if param.ndim == 2 else 0.1) * noise
            )
    return model.eval()


@dataclasses.dataclass
class Batch:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def torch_kwargs(self, with_token_types: bool = True) -> dict:
        import torch

        out = {
            "input_ids": torch.tensor(self.input_ids, dtype=torch.long),
            "attention_mask": torch.tensor(self.attention_mask, dtype=torch.long),
        }
        if with_token_types:
            out["token_type_ids"] = torch.tensor(self.token_type_ids, dtype=torch.long)
        return out

    @property
    def real(self) -> np.ndarray:
        return self.attention_mask == 1


def padded_batch(hf_config, seed: int = 0) -> Batch:
    """3 rows of length 9 / 5 / 2; padding holds pad_token_id (as tokenizers produce)."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(SEQ)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
    ids = np.where(mask == 1, rng.integers(3, VOCAB, (len(LENGTHS), SEQ)), hf_config.pad_token_id)
    type_vocab = getattr(hf_config, "type_vocab_size", 1)
    token_types = np.where(mask == 1, rng.integers(0, type_vocab, ids.shape), 0)
    return Batch(ids.astype(np.int32), mask, token_types.astype(np.int32))


def torch_logits(model, batch: Batch, model_type: str) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(**batch.torch_kwargs(model_type != "distilbert")).logits.numpy()


def flax_logits(model, batch: Batch, **kwargs) -> np.ndarray:
    return np.asarray(model(batch.input_ids, batch.attention_mask, batch.token_type_ids, **kwargs))
