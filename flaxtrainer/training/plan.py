"""What a training run fixes before its first step: the checks of its datasets, the sampler,
the number of steps and epochs, the packing grid, the initial ``TrainerState``, and the fp32
master copy of the model's parameters.

The training order is a pure function of ``(seed, epoch)`` (``batching.sampler``); with
packing, one grid is planned for every batch of the run, so the train step compiles once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from flaxtrainer.batching.sampler import LengthGroupedSampler
from flaxtrainer.callbacks.state import TrainerState
from flaxtrainer.runtime.sharding import replicate
from flaxtrainer.training.evaluation import check_eval_sets

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from flaxtrainer.batching.batchers import PackingGrid
    from flaxtrainer.batching.input_pipeline import PreparedData
    from flaxtrainer.config.training_args import TrainingArguments


class TrainingPlan(NamedTuple):
    """The batches of a run: ``sampler`` orders the examples of ``batcher``; ``grid`` is the
    packing grid of every batch (None for a layout that plans none)."""

    sampler: LengthGroupedSampler
    batcher: PreparedData
    grid: PackingGrid | None
    max_steps: int
    steps_per_epoch: int
    num_train_epochs: int


def check_datasets(args: TrainingArguments, train_dataset: Any, eval_dataset: Any) -> None:
    """Refuse a run without a training set, or one that evaluates without an evaluation set
    (or with several, none of which ``metric_for_best_model`` names)."""
    if train_dataset is None:
        raise ValueError("FlaxTrainer.train() needs a train_dataset; pass it to FlaxTrainer(...).")
    if args.eval_strategy != "no" and eval_dataset is None:
        raise ValueError(
            f"eval_strategy={args.eval_strategy!r} evaluates during training but no "
            "eval_dataset was given: pass eval_dataset, or set eval_strategy='no'."
        )
    check_eval_sets(args, eval_dataset)  # several sets: which one picks the best?


def plan_training(
    args: TrainingArguments, batcher: PreparedData, *, micro_size: int, multiple: int
) -> TrainingPlan:
    """The sampler (``micro_size`` global rows per micro-batch, times the gradient accumulation
    steps per update), ``max_steps`` (or ``num_train_epochs`` of steps) and the grid planned
    over every batch of the run, in rows divisible by ``multiple``."""
    accum = args.gradient_accumulation_steps
    sampler = LengthGroupedSampler(
        batcher.lengths,
        micro_size * accum,
        args.seed,
        group_by_length=args.group_by_length,  # the same rule for either layout
        balance_tokens=not args.group_by_length,
        micro_batches=accum,
    )
    steps_per_epoch = len(sampler)
    if args.max_steps > 0:
        max_steps = args.max_steps
    else:
        max_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    grid = batcher.plan(  # packing: one grid for the whole run, one shape
        (b for e in range(num_epochs) for b in sampler.epoch(e)),  # read only by a planner
        micro_size=micro_size,
        multiple=multiple,
    )
    return TrainingPlan(sampler, batcher, grid, max_steps, steps_per_epoch, num_epochs)


def initial_state(args: TrainingArguments, plan: TrainingPlan, micro_size: int) -> TrainerState:
    """The ``TrainerState`` at step 0 of ``plan`` (a resume replaces its position)."""
    return TrainerState(
        max_steps=plan.max_steps,
        num_train_epochs=plan.num_train_epochs,
        steps_per_epoch=plan.steps_per_epoch,
        logging_steps=args.logging_steps,
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        train_batch_size=micro_size * args.gradient_accumulation_steps,
        is_world_process_zero=jax.process_index() == 0,
    )


def master_params(model: nnx.Module, mesh: Mesh) -> Any:
    """The model's parameters as fp32 master weights, replicated on ``mesh``."""
    params = nnx.state(model, nnx.Param)
    params = jax.tree.map(
        lambda x: (
            x.astype(jnp.float32)
            if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32
            else x
        ),
        params,
    )
    return replicate(params, mesh)
