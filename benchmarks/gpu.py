"""GPU throughput of FlaxTrainer: a base-sized encoder, bf16, large batch; tokens/s and MFU.

`--model` picks the architecture, randomly initialised (no download; see gpu_models.py):
bert-base (`BertConfig` defaults: 12 layers, hidden 768, 12 heads, 110M parameters, the
default), deberta-v3-base (microsoft/deberta-v3-base's architecture: disentangled relative
attention) or modernbert-base (answerdotai/ModernBERT-base's: 22 layers, GeGLU, rotary, local
attention in 2 of 3 layers). It trains through `FlaxTrainer` (its jitted data-parallel step,
batching, sharding and host loop: the library as users get it) with `dtype="bfloat16"` (bf16
compute, fp32 master weights) on synthetic token-classification rows. `--warmup` steps
(compilation included) are not timed; the next `--steps` are, between two device syncs.

  --lengths full   every row 128 real tokens (what packed rows look like): one compiled shape,
                   no padding, so tokens/s is the model's own speed;
  --lengths ner    NER-like sentence lengths (log-normal, median ~24) as the trainer ships:
                   packed several to a row in one planned grid (one compiled shape); with
                   --no_packing in its length buckets instead (up to 8 compiled shapes).

MFU = model FLOPs of the real tokens per second / the card's peak. Model FLOPs per token
(gpu_models.flops_per_token, which documents each term) = 6 x matmul parameters (all but the
embedding tables) + 12 x hidden x C per layer (attention scores and values, forward and
backward, PaLM appendix B; C = keys per query: the sentence length, token-weighted, or for
ModernBERT's local layers the keys inside the window), plus for DeBERTa 12 x hidden x C per
layer for the c2p and p2c score terms and the per-step projection of the relative-position
embeddings. Padding and masked-out scores are not model work, so they lower MFU. Peak:
`--peak_tflops`, else looked up from the device name (H100 / H200 SXM: 989 dense bf16 TFLOP/s).

The task here is a small duck-typed one, not `flaxtrainer.tasks`: that package imports
`datasets` and `seqeval`, which the GPU image lacks, and the trainer needs only the protocol.

    PYTHONPATH=. python3 benchmarks/gpu.py --out gpu.json            # on the device, < 8 min
    PYTHONPATH=. python3 benchmarks/gpu.py --model deberta-v3-base --out gpu_deberta.json
    python benchmarks/gpu.py --tiny --model modernbert-base          # CPU smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from gpu_models import (
    LABELS,
    MODELS,
    Shape,
    base_shape,
    build_model,
    flops_per_token,
    parameter_counts,
)

#: Dense bf16 peak TFLOP/s by device-name fragment (vendor datasheets, SXM parts).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "V5E": 197.0}

IGNORE_INDEX = -100


class SyntheticTokenTask:
    """Token classification on pre-tokenized synthetic rows (the Task protocol, duck-typed).

    `prepare` takes the list of row lengths and returns one feature per row: random ids, 1/0
    mask, random labels with -100 on the first and last token (the [CLS]/[SEP] places).
    """

    model_input_names = ("input_ids", "attention_mask")
    pad_token_id = 0

    def __init__(self, num_labels: int, vocab_size: int, max_seq_length: int, seed: int) -> None:
        self.num_labels = num_labels
        self.id2label = {i: f"L{i}" for i in range(num_labels)}
        self.vocab_size = vocab_size
        self.max_seq_length = max_seq_length
        self.seed = seed

    def prepare(self, lengths: list[int]) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        features = []
        for length in lengths:
            labels = rng.integers(0, self.num_labels, length, dtype=np.int32)
            labels[0] = labels[-1] = IGNORE_INDEX
            features.append(
                {
                    "input_ids": rng.integers(1, self.vocab_size, length, dtype=np.int32),
                    "attention_mask": np.ones(length, np.int32),
                    "labels": labels,
                }
            )
        return features

    def loss(self, logits, labels):
        """Masked softmax cross-entropy in float32: (sum, count), as TokenClassificationTask."""
        import jax.numpy as jnp
        import optax

        mask = labels != IGNORE_INDEX
        per_token = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), jnp.where(mask, labels, 0)
        )
        return jnp.sum(jnp.where(mask, per_token, 0.0)), jnp.sum(mask, dtype=jnp.float32)

    def predict_step(self, logits):
        import jax.numpy as jnp

        return {"predictions": jnp.argmax(logits, axis=-1).astype(jnp.int32)}

    def compute_metrics(self, dataset, features, outputs) -> dict[str, float]:
        return {}

    def decode(self, dataset, features, outputs) -> list[list[str]]:
        return []


def row_lengths(kind: str, rows: int, seq_len: int, seed: int) -> list[int]:
    """`full`: every row `seq_len`; `ner`: log-normal NER-like lengths in [4, seq_len]."""
    if kind == "full":
        return [seq_len] * rows
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(math.log(24 * seq_len / 128), 0.5, rows))
    return np.clip(np.rint(lengths), 4, seq_len).astype(int).tolist()


def peak_tflops(device_kind: str, override: float | None) -> float | None:
    """The card's dense bf16 peak: `override`, else a lookup by device name, else None."""
    if override:
        return override
    name = device_kind.upper().replace(" ", "")
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, train warmup + timed steps, and return the measurements."""
    import jax
    import jax.numpy as jnp

    from flaxtrainer import FlaxTrainer, TrainingArguments
    from flaxtrainer.callbacks import Callback

    base = base_shape(args.model, args.tiny)
    shape = Shape(
        base.hidden_size,
        base.num_hidden_layers,
        base.num_attention_heads,
        base.intermediate_size,
        base.vocab_size,
        global_batch=args.global_batch or base.global_batch,
        seq_len=args.seq_len or base.seq_len,
    )
    devices = jax.device_count()
    if shape.global_batch % devices:
        raise SystemExit(
            f"--global_batch {shape.global_batch} does not split over {devices} devices"
        )
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    labels = tuple(f"L{i}" for i in range(args.num_labels))
    model = build_model(args.model, shape, labels, tiny=args.tiny, dtype=dtype, seed=args.seed)
    total_params, matmul_params = parameter_counts(model)

    steps = args.warmup + args.steps
    lengths = row_lengths(args.lengths, steps * shape.global_batch, shape.seq_len, args.seed)
    task = SyntheticTokenTask(len(labels), shape.vocab_size, shape.seq_len, args.seed)

    class Window(Callback):
        """Device-synced wall clock and token count after the warmup steps and at the end."""

        start = end = None
        tokens_at_start = shapes_at_start = 0

        def on_step_end(self, trainer) -> None:
            if trainer.state.global_step == args.warmup:
                jax.block_until_ready(trainer._train_state)
                self.start = time.perf_counter()
                self.tokens_at_start = trainer.state.num_input_tokens_seen
                self.shapes_at_start = trainer.train_compiled_shapes

        def on_train_end(self, trainer) -> None:
            jax.block_until_ready(trainer._train_state)
            self.end = time.perf_counter()

    window = Window()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            do_train=True,
            per_device_train_batch_size=shape.global_batch // devices,
            max_steps=steps,
            learning_rate=5e-5,
            dtype=args.dtype,
            pad_to_max_length=args.lengths == "full",
            packing=False if args.no_packing else None,
            logging_steps=steps,
            report_to="none",
            disable_tqdm=True,
            save_strategy="no",
            seed=args.seed,
        )
        trainer = FlaxTrainer(model, task, training_args, train_dataset=lengths, callbacks=[window])
        start = time.perf_counter()
        output = trainer.train()
        total_s = time.perf_counter() - start

    timed_s = window.end - window.start
    real_tokens = trainer.state.num_input_tokens_seen - window.tokens_at_start
    tokens_per_s = real_tokens / timed_s
    # Sentences per optimizer step: `global_batch` of them, however they are packed into rows.
    tokens_per_step = float(np.mean(lengths)) * shape.global_batch
    flops = flops_per_token(model.config, matmul_params, lengths, tokens_per_step)
    model_tflops = flops["total"] * tokens_per_s / 1e12
    device = jax.devices()[0]
    peak = peak_tflops(device.device_kind, args.peak_tflops)
    return {
        "device": f"{devices} x {device.device_kind} ({jax.default_backend()})",
        "model_name": args.model,
        "model": f"{LABELS[args.model]} random init: {shape.num_hidden_layers} layers, "
        f"hidden {shape.hidden_size}, {total_params / 1e6:.4g}M parameters "
        f"({matmul_params / 1e6:.4g}M in matmuls)",
        "total_params": total_params,
        "matmul_params": matmul_params,
        "dtype": args.dtype,
        "lengths": args.lengths,
        "global_batch": shape.global_batch,
        "seq_len": shape.seq_len,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "timed_s": timed_s,
        "step_ms": 1000 * timed_s / args.steps,
        "tokens_per_s": tokens_per_s,
        "sentences_per_s": args.steps * shape.global_batch / timed_s,
        "packing": trainer.packing,
        "padding_efficiency": output.metrics["padding_efficiency"],  # whole run
        "train_compiled_shapes": output.metrics["train_compiled_shapes"],
        # > 0 means compilation fell into the timed window: raise --warmup
        "shapes_compiled_while_timed": output.metrics["train_compiled_shapes"]
        - window.shapes_at_start,
        "flops_per_token": flops["total"],
        "flops_per_token_terms": {k: v for k, v in flops.items() if k != "total"},
        "model_tflops_per_s": model_tflops,
        "peak_tflops": peak,
        "mfu": model_tflops / peak if peak else None,
        "untimed_s": total_s - timed_s,  # data preparation, compilation, warmup steps
        "train_loss": output.training_loss,
        "jax": jax.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="bert-base", help="the architecture")
    parser.add_argument("--tiny", action="store_true", help="tiny model and batch (CPU smoke run)")
    parser.add_argument("--lengths", choices=("full", "ner"), default="full")
    parser.add_argument(
        "--no_packing", action="store_true", help="--lengths ner: length buckets, not packing"
    )
    parser.add_argument("--global_batch", type=int, default=None, help="default 256 (tiny: 8)")
    parser.add_argument("--seq_len", type=int, default=None, help="default 128 (tiny: 32)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 50; tiny 2)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default 5, ner 25; tiny 1)"
    )
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--num_labels", type=int, default=21, help="W-NUT 2016 has 21 tags")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the card's dense peak")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.tiny else 50
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 25 if args.lengths == "ner" else 5
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be >= 1")

    result = run(args)
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:,.4g}" for k, v in value.items())
        shown = f"{value:,.4g}" if isinstance(value, float) else value
        print(f"{key:>24}: {shown}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
