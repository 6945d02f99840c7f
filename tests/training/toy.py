"""A toy NNX tagger and a toy Task for trainer tests: tiny, fast, and exact to reason about.

The trainer knows nothing about tagging; these stand-ins follow the Model and Task contracts
of docs/internals.md and nothing more.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxtrainer import TrainingArguments

VOCAB, HIDDEN, NUM_LABELS = 50, 16, 5
CONTINUATION_EVERY = 7  # tokens whose id is a multiple of this get label -100


class ToyTagger(nnx.Module):
    """Embedding + masked mean context + dense + LayerNorm + dropout + head.

    Dropout defaults to 0: on CPU, compiling the dropout RNG (threefry) triples the compile
    time of a train step, so only the tests about dropout turn it on.

    The sentence context (a mean over the attention mask) makes outputs depend on the mask, so
    tests notice if padding leaks into real tokens.
    """

    def __init__(self, *, dropout: float = 0.0, dtype: Any = jnp.float32, seed: int = 0) -> None:
        rngs = nnx.Rngs(seed)
        self.embed = nnx.Embed(VOCAB, HIDDEN, dtype=dtype, rngs=rngs)
        self.dense = nnx.Linear(2 * HIDDEN, HIDDEN, dtype=dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(HIDDEN, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.head = nnx.Linear(HIDDEN, NUM_LABELS, dtype=dtype, rngs=rngs)

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
        h = self.embed(input_ids)
        mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask > 0
        weights = mask[..., None].astype(h.dtype)
        context = (h * weights).sum(1, keepdims=True) / jnp.maximum(
            weights.sum(1, keepdims=True), 1
        )
        h = jnp.concatenate([h, jnp.broadcast_to(context, h.shape)], axis=-1)
        h = self.norm(nnx.gelu(self.dense(h)))
        h = self.dropout(h, deterministic=deterministic, rngs=rngs)
        return self.head(h)


def make_dataset(
    n: int, seed: int = 0, min_len: int = 2, max_len: int = 30
) -> list[dict[str, list[int]]]:
    """``n`` examples ``{"ids", "tags"}`` of random length; tags are a learnable function of ids."""
    rng = np.random.default_rng(seed)
    data = []
    for _ in range(n):
        ids = rng.integers(1, VOCAB, size=int(rng.integers(min_len, max_len + 1)))
        data.append({"ids": ids.tolist(), "tags": ((ids * 3 + 1) % NUM_LABELS).tolist()})
    return data


class ToyTask:
    """Follows the Task contract; ``score_script`` makes compute_metrics return scripted scores."""

    model_input_names = ("input_ids", "attention_mask", "token_type_ids")
    num_labels = NUM_LABELS
    id2label = {i: f"T{i}" for i in range(NUM_LABELS)}

    def __init__(
        self, max_seq_length: int = 32, score_script: Sequence[float] | None = None
    ) -> None:
        self.max_seq_length = max_seq_length
        self._scores: Iterator[float] | None = (
            iter(score_script) if score_script is not None else None
        )
        self.metric_calls: list[tuple[int, int]] = []  # (features, outputs) per compute_metrics

    def prepare(self, dataset: Sequence[dict[str, list[int]]]) -> list[dict[str, Any]]:
        features = []
        for index, example in enumerate(dataset):
            ids = np.asarray(example["ids"], np.int32)
            labels = np.asarray(example["tags"], np.int32)
            labels = np.where(ids % CONTINUATION_EVERY == 0, -100, labels).astype(np.int32)
            features.append(
                {
                    "input_ids": ids,
                    "attention_mask": np.ones_like(ids),
                    "labels": labels,
                    "example_index": index,
                }
            )
        return features

    def loss(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
        mask = labels != -100
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(mask, labels, 0))
        return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(mask)

    def predict_step(self, logits: jax.Array) -> dict[str, jax.Array]:
        return {"predictions": jnp.argmax(logits, -1), "logits": logits}

    def compute_metrics(self, dataset, features, outputs) -> dict[str, float]:
        self.metric_calls.append((len(features), len(outputs)))
        correct = total = 0
        for feature, output in zip(features, outputs):
            mask = feature["labels"] != -100
            correct += int((output["predictions"][mask] == feature["labels"][mask]).sum())
            total += int(mask.sum())
        metrics = {"accuracy": correct / max(total, 1), "labelled_tokens": float(total)}
        if self._scores is not None:
            metrics["score"] = next(self._scores)
        return metrics

    def decode(self, dataset, features, outputs) -> list[list[str]]:
        return [[self.id2label[int(p)] for p in out["predictions"]] for out in outputs]

    def format_examples(self, dataset, features, outputs, n: int = 3) -> str:
        rows = ["| tokens | predicted |", "|---|---|"]
        for feature, output in list(zip(features, outputs))[:n]:
            rows.append(f"| {feature['input_ids'].tolist()} | {output['predictions'].tolist()} |")
        return "\n".join(rows)


@functools.partial(jax.jit, static_argnums=0)
def _deterministic_logits(
    graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array, mask: jax.Array
) -> jax.Array:
    return nnx.merge(graphdef, state)(ids, mask, deterministic=True)


def reference_logits(model: ToyTagger, features: Sequence[dict[str, Any]]) -> list[np.ndarray]:
    """Deterministic logits of every feature, from one padded batch outside the trainer (rows
    and width rounded up to 64 and 32, so that few shapes get compiled)."""
    width = -(-max(len(f["input_ids"]) for f in features) // 32) * 32
    rows = -(-len(features) // 64) * 64
    ids = np.zeros((rows, width), np.int32)
    mask = np.zeros((rows, width), np.int32)
    for row, f in enumerate(features):
        ids[row, : len(f["input_ids"])] = f["input_ids"]
        mask[row, : len(f["input_ids"])] = 1
    graphdef, state = nnx.split(model)
    logits = np.asarray(_deterministic_logits(graphdef, state, ids, mask))
    return [logits[row, : len(f["input_ids"])] for row, f in enumerate(features)]


def masked_cross_entropy(
    logits: Sequence[np.ndarray], labels: Sequence[np.ndarray]
) -> tuple[float, int]:
    """Numpy reference: (sum, count) of token cross-entropy over labels != -100."""
    total, count = 0.0, 0
    for lg, lb in zip(logits, labels):
        lg = np.asarray(lg, np.float64)
        keep = lb != -100
        shifted = lg - lg.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        total += float(-log_probs[keep, lb[keep]].sum())
        count += int(keep.sum())
    return total, count


def toy_args(output_dir: str, **overrides: Any) -> TrainingArguments:
    """TrainingArguments for quiet toy runs (global batch 16 on 8 devices, no checkpoints, no
    TensorBoard, no progress bar); override any field."""
    values: dict[str, Any] = dict(
        output_dir=output_dir,
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)
