"""The pure, jitted step functions: one optimizer update, one evaluation batch.

The model enters as ``(graphdef, params, rest)`` from ``nnx.split(model, nnx.Param, ...)`` and
is merged inside the step, so the functions are pure and the train state can be donated.
``rest`` (non-parameter state) is treated as constant. Loss sums and counts are global: under
``jit`` a ``jnp.sum`` over the batch-sharded array reduces over all devices, and gradient
accumulation sums (loss, count, gradient of the loss sum) over micro-batches and divides by the
global count once, so every update equals the one of a single large batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from flaxtrainer.batching.batchers import EXAMPLE_IDS
from flaxtrainer.models.crf import WORD_STARTS
from flaxtrainer.models.dropout_rng import HASH_PRNG, dropout_key
from flaxtrainer.runtime.sharding import batch_sharding, replicated

Batch = dict[str, jax.Array]

#: Batch arrays passed to the model besides the task's inputs when present (packed batches).
EXTRA_MODEL_INPUTS = ("position_ids",)
#: Task inputs that only the task's loss / predict_step read, never the model (a CRF's words).
TASK_ONLY_INPUTS = (WORD_STARTS,)


def head_params(model: Any) -> dict[str, jax.Array]:
    """``model.head_params()``: parameters the task needs besides the logits (a CRF's
    transitions); ``{}`` for a plain head or a model without the (optional) method."""
    method = getattr(model, "head_params", None)
    return {} if method is None else dict(method())


def task_context(head: dict[str, jax.Array], batch: Batch) -> dict[str, Any]:
    """Extra keywords for ``task.loss`` / ``task.predict_step``: ``head`` and ``batch`` when the
    model has head parameters, none otherwise, so a plain model and a task written as
    ``loss(logits, labels)`` run exactly as before."""
    return {"head": head, "batch": batch} if head else {}


class TrainState(struct.PyTreeNode):
    """Everything an update changes; donated to the train step.

    ``step`` counts optimizer updates already applied (it also seeds dropout).
    """

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def zero_metrics() -> dict[str, jax.Array]:
    """On-device accumulators of a logging window (summed over its steps)."""
    return {
        "loss_sum": jnp.zeros((), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
        "grad_norm_sum": jnp.zeros((), jnp.float32),
        "steps": jnp.zeros((), jnp.int32),
    }


def cast_floating(tree: Any, dtype: jnp.dtype | None) -> Any:
    """Cast floating leaves to ``dtype`` (the compute copy of fp32 master weights)."""
    if dtype is None:
        return tree
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def keys_dropout_by_example(model: Any, batch: Batch, key: jax.Array) -> bool:
    """Whether the train step hands the model ``example_ids`` (``batching.EXAMPLE_IDS``): the
    batch carries them, the model's ``__call__`` takes them (flaxtrainer's encoders) and the
    dropout key is a hash-PRNG key. Then every dropout mask is keyed by (example, position in
    the example), the same in any layout and micro-batch (``flaxtrainer.models.dropout``);
    otherwise (threefry, other models) masks follow the element's place in the global batch."""
    if EXAMPLE_IDS not in batch or jax.random.key_impl(key) != HASH_PRNG:
        return False
    try:
        return "example_ids" in inspect.signature(model.__call__).parameters
    except (TypeError, ValueError):
        return False


def _forward(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    batch: Batch,
    input_names: Sequence[str],
    compute_dtype: jnp.dtype | None,
    dropout_key: jax.Array | None,
    micro_index: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Float32 logits of the merged model and its :func:`head_params`; dropout on iff
    ``dropout_key`` is given.

    The model gets those of ``input_names`` (and of ``EXTRA_MODEL_INPUTS``) that the batch
    holds, except ``TASK_ONLY_INPUTS``: the features and the batch layout decide. With dropout,
    ``example_ids`` too where :func:`keys_dropout_by_example`; else the key of micro-batch
    ``micro_index`` (gradient accumulation) is ``fold_in(dropout_key, micro_index)``.
    """
    model = nnx.merge(graphdef, cast_floating(params, compute_dtype), rest)
    names = dict.fromkeys((*input_names, *EXTRA_MODEL_INPUTS))
    inputs = {n: batch[n] for n in names if n in batch and n not in TASK_ONLY_INPUTS}
    if dropout_key is None:
        logits = model(**inputs, deterministic=True)
    else:
        if keys_dropout_by_example(model, batch, dropout_key):
            inputs[EXAMPLE_IDS] = batch[EXAMPLE_IDS]
        elif micro_index is not None:
            dropout_key = jax.random.fold_in(dropout_key, micro_index)
        logits = model(**inputs, deterministic=False, rngs=nnx.Rngs(dropout=dropout_key))
    return logits.astype(jnp.float32), head_params(model)


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: Callable[..., tuple[jax.Array, jax.Array]],
    tx: optax.GradientTransformation,
    *,
    input_names: Sequence[str],
    seed: int,
    compute_dtype: jnp.dtype | None = None,
    dropout_rng: str = "hash",
) -> Callable[..., tuple[TrainState, dict[str, jax.Array], jax.Array]]:
    """``step(state, rest, metrics, batch) -> (state, metrics, done)``: one optimizer update.

    ``batch`` arrays are ``[accum, rows, width]``; the ``accum`` micro-batches are scanned,
    summing loss, label count and the gradient of the loss *sum*; then the gradient is divided
    by the global count. Dropout key: ``fold_in(key(seed), step)``; with ``"hash"`` and a batch
    carrying ``example_ids`` each mask is keyed by (example, position in the example) as well,
    so it depends neither on the layout (padded or packed), nor on the micro-batch, nor on the
    device count; otherwise (``"threefry"``, a model without ``example_ids``) the micro-batch
    index is folded in when accumulating and masks are drawn for the global batch, which does
    not depend on the device count either. ``dropout_rng`` picks the generator
    (``flaxtrainer.models.dropout_rng``: ``"hash"``, cheap, or JAX's ``"threefry"``).
    ``metrics`` accumulate on device until the trainer fetches them at a logging step. ``done``
    is a fresh scalar (the new step) the host may wait on to bound how far it runs ahead.
    """

    def loss_sum_and_count(params, rest, micro, key, index=None):
        logits, head = _forward(
            graphdef, params, rest, micro, input_names, compute_dtype, key, index
        )
        loss_sum, count = loss_fn(logits, micro["labels"], **task_context(head, micro))
        return loss_sum.astype(jnp.float32), count.astype(jnp.int32)

    grad_fn = jax.value_and_grad(loss_sum_and_count, has_aux=True)

    def step(state: TrainState, rest: Any, metrics: dict[str, jax.Array], batch: Batch):
        key = jax.random.fold_in(dropout_key(seed, dropout_rng), state.step)
        accum = next(iter(batch.values())).shape[0]
        if accum == 1:
            micro = {k: v[0] for k, v in batch.items()}
            (loss_sum, count), grad_sum = grad_fn(state.params, rest, micro, key)
        else:

            def body(carry, xs):
                index, micro = xs
                (l_sum, n), g = grad_fn(state.params, rest, micro, key, index)
                g_acc, l_acc, n_acc = carry
                return (jax.tree.map(jnp.add, g_acc, g), l_acc + l_sum, n_acc + n), None

            init = (
                jax.tree.map(jnp.zeros_like, state.params),
                jnp.zeros((), jnp.float32),
                jnp.zeros((), jnp.int32),
            )
            (grad_sum, loss_sum, count), _ = jax.lax.scan(body, init, (jnp.arange(accum), batch))
        denominator = jnp.maximum(count, 1).astype(jnp.float32)
        grads = jax.tree.map(lambda g: g / denominator, grad_sum)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        new_metrics = {
            "loss_sum": metrics["loss_sum"] + loss_sum,
            "count": metrics["count"] + count,
            "grad_norm_sum": metrics["grad_norm_sum"] + grad_norm,
            "steps": metrics["steps"] + 1,
        }
        return new_state, new_metrics, new_state.step + 0

    return step


def make_eval_step(
    graphdef: nnx.GraphDef,
    loss_fn: Callable[..., tuple[jax.Array, jax.Array]],
    predict_fn: Callable[..., dict[str, jax.Array]],
    *,
    input_names: Sequence[str],
    compute_dtype: jnp.dtype | None = None,
) -> Callable[..., tuple[dict[str, jax.Array], jax.Array, jax.Array]]:
    """``step(params, rest, batch) -> (outputs, loss_sum, count)`` for one ``[rows, width]`` batch.

    Returning sums and counts (not means) keeps averages over batches and devices exact.
    """

    def step(params: Any, rest: Any, batch: Batch):
        logits, head = _forward(graphdef, params, rest, batch, input_names, compute_dtype, None)
        context = task_context(head, batch)
        loss_sum, count = loss_fn(logits, batch["labels"], **context)
        outputs = predict_fn(logits, **context)
        return outputs, loss_sum.astype(jnp.float32), count.astype(jnp.int32)

    return step


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
    """Jit with replicated state/metrics, batch rows (axis 1) on ``"data"``; state and metrics
    are donated."""
    rep = replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(rep, rep, rep, batch_sharding(mesh, batch_axis=1)),
        out_shardings=(rep, rep, rep),
        donate_argnums=(0, 2),
    )


def jit_eval_step(step: Callable, mesh: Mesh) -> Callable:
    """Jit with replicated params, batch rows (axis 0) on ``"data"``."""
    rep = replicated(mesh)
    return jax.jit(step, in_shardings=(rep, rep, batch_sharding(mesh, batch_axis=0)))
