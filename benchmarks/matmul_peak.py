"""The machine's measured fp32 matmul rate under JAX: the yardstick for "share of matmul peak".

Times `jnp.dot` on the shapes a MiniLM-sized train step multiplies (tokens x 384 by 384 x 384
and 384 x 1536, and the transposed products of the backward pass) and on a large square
product, each for about `--seconds`, and prints JSON: GFLOP/s per shape and their maximum
(`peak_gflops`). Run as its own process (profile_run.py does, once per session) so that the
result is what XLA:CPU reaches with this machine's cores, not a datasheet number.

    python benchmarks/matmul_peak.py --seconds 2
"""

from __future__ import annotations

import argparse
import json
import time

#: (m, k, n): C[m, n] = A[m, k] @ B[k, n]; 2,048 tokens as in a packed MiniLM micro-batch.
SHAPES = (
    (2048, 384, 384),
    (2048, 384, 1536),
    (2048, 1536, 384),
    (384, 2048, 1536),
    (4096, 4096, 4096),
)


def measure(seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s per shape (`"m x k x n"`) and `peak_gflops`, their maximum."""
    import jax
    import jax.numpy as jnp

    rates: dict[str, float] = {}
    key = jax.random.key(0)
    for m, k, n in SHAPES:
        a = jax.random.normal(key, (m, k), jnp.float32)
        b = jax.random.normal(key, (k, n), jnp.float32)
        dot = jax.jit(jnp.dot)
        dot(a, b).block_until_ready()  # compile and warm up
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            dot(a, b).block_until_ready()
            calls += 1
        elapsed = time.perf_counter() - start
        rates[f"{m} x {k} x {n}"] = 2.0 * m * k * n * calls / elapsed / 1e9
    rates["peak_gflops"] = max(rates.values())
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per shape")
    print(json.dumps(measure(parser.parse_args(argv).seconds)))


if __name__ == "__main__":
    main()
