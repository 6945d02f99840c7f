"""Optimizer and learning-rate schedule from TrainingArguments (optax).

AdamW (or Adafactor) after global-norm clipping; weight decay is masked off biases and
normalisation scales, recognised by parameter *kind* (the leaf name ``bias`` / ``scale``),
not by model-specific paths, so it holds for every encoder family. With
``crf_learning_rate_multiplier`` != 1 the updates of the CRF's transition scores (the ``crf``
module's :data:`flaxtrainer.models.crf.PARAM_NAMES`) are scaled by it: they learn at that multiple of
the learning rate, warmup and decay included.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import optax

from flaxtrainer.config.training_args import TrainingArguments

logger = logging.getLogger(__name__)

NO_DECAY_NAMES = frozenset({"bias", "scale"})
#: The NNX attribute of a model's CRF layer (`flaxtrainer.models.crf.CrfParams`).
CRF_MODULE = "crf"


def path_names(path: tuple[Any, ...]) -> tuple[str, ...]:
    """Readable names of a pytree key path, without NNX's trailing ``value`` attribute."""
    names = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
        else:
            names.append(str(key))
    if names and names[-1] == "value":
        names.pop()
    return tuple(names)


def decay_mask(params: Any) -> Any:
    """``True`` for parameters that get weight decay: all but biases and norm scales."""

    def decays(path: tuple[Any, ...], _: Any) -> bool:
        names = path_names(path)
        return not names or names[-1] not in NO_DECAY_NAMES

    return jax.tree_util.tree_map_with_path(decays, params)


def is_crf_param(path: tuple[Any, ...]) -> bool:
    """Whether a parameter path is one of the CRF layer's transition scores."""
    from flaxtrainer.models.crf import PARAM_NAMES

    names = path_names(path)
    return len(names) >= 2 and names[-2] == CRF_MODULE and names[-1] in PARAM_NAMES


def scale_crf_updates(multiplier: float) -> optax.GradientTransformation:
    """Multiplies the updates of the CRF parameters (:func:`is_crf_param`) by ``multiplier``."""

    def scale(updates: Any, params: Any = None) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, u: u * multiplier if is_crf_param(path) else u, updates
        )

    return optax.stateless(scale)


def make_schedule(args: TrainingArguments, total_steps: int) -> optax.Schedule:
    """The learning rate by number of optimizer updates already applied, as Hugging Face's
    ``lr_scheduler_type``s:

    - ``linear`` / ``cosine``: linear warmup from 0 to ``learning_rate``, then linear / cosine
      decay to 0 at ``total_steps``;
    - ``constant_with_warmup``: linear warmup, then ``learning_rate``;
    - ``constant``: ``learning_rate`` from the first update: no warmup, even if warmup_steps or
      warmup_ratio is set (a warning says so).
    """
    peak = args.learning_rate
    warmup = args.warmup_steps_for(total_steps)
    if args.lr_scheduler_type == "constant":
        if warmup:
            logger.warning(
                "lr_scheduler_type=constant does not warm up: warmup_steps/warmup_ratio are "
                "ignored (as in Hugging Face); use constant_with_warmup to warm up."
            )
        return optax.constant_schedule(peak)
    decay_steps = max(total_steps - warmup, 1)
    if args.lr_scheduler_type == "linear":
        decay = optax.linear_schedule(peak, 0.0, decay_steps)
    elif args.lr_scheduler_type == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps)
    elif args.lr_scheduler_type == "constant_with_warmup":
        decay = optax.constant_schedule(peak)
    else:  # validated by TrainingArguments
        raise ValueError(f"Unknown lr_scheduler_type {args.lr_scheduler_type!r}.")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(
    args: TrainingArguments, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Global-norm clipping (``max_grad_norm`` > 0), then AdamW or Adafactor with ``schedule``.

    Weight decay is decoupled and scaled by the learning rate (as PyTorch/HF AdamW).
    """
    if args.adafactor:
        optimizer = optax.adafactor(
            learning_rate=schedule,
            weight_decay_rate=args.weight_decay or None,
            weight_decay_mask=decay_mask,
        )
    else:
        optimizer = optax.adamw(
            learning_rate=schedule,
            b1=args.adam_beta1,
            b2=args.adam_beta2,
            eps=args.adam_epsilon,
            weight_decay=args.weight_decay,
            mask=decay_mask,
        )
    if args.crf_learning_rate_multiplier != 1:
        optimizer = optax.chain(optimizer, scale_crf_updates(args.crf_learning_rate_multiplier))
    if args.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(args.max_grad_norm), optimizer)
    return optimizer
