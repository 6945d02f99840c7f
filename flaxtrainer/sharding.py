"""Data parallelism: the device mesh, putting host batches on it, and padding partial batches.

Parameters and optimizer state are replicated; every batch is split along its row axis over
the mesh axis ``"data"``. Under ``jax.jit`` this has the semantics of the classic pmap loop
(a ``jnp.sum`` over the batch is a global reduction), and the same code spans several hosts
once :func:`put_batch` builds global arrays from process-local data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

T = TypeVar("T")

#: Fill values for padded positions and padded rows, by array name; other names pad with 0.
#: ``labels`` pad with -100, so padded tokens and rows count nowhere (loss, metrics).
DEFAULT_PAD_VALUES: dict[str, int] = {"labels": -100, "attention_mask": 0, "input_ids": 0}


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: all devices).

    Axes are ``AxisType.Auto``: with the default Explicit axes, an embedding lookup on a
    batch-sharded array fails to infer its output sharding.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: got an empty list of devices.")
    return jax.make_mesh((len(devices),), (DATA_AXIS,), (AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of parameters, optimizer state and metric accumulators: a full copy per device."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """Sharding of a batch array whose rows (axis ``batch_axis``) are split over ``"data"``."""
    return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put a pytree (params, optimizer state) on every device of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def put_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axis: int = 0
) -> dict[str, jax.Array]:
    """Host batch -> global device arrays sharded on ``"data"`` along ``batch_axis``.

    The one place that turns host data into global arrays. Single process: ``device_put`` of
    the whole global batch. Multi-host: replace by ``jax.make_array_from_process_local_data``
    with each process passing its slice of rows.
    """
    return jax.device_put(dict(batch), batch_sharding(mesh, batch_axis))


def to_host(tree: Any) -> Any:
    """Fetch device arrays (possibly sharded) to host numpy; blocks until they are computed.

    Multi-host: sharded arrays need ``multihost_utils.process_allgather`` here.
    """
    return jax.device_get(tree)


def pad_rows(
    batch: Mapping[str, np.ndarray],
    num_rows: int,
    pad_values: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Pad every array of ``batch`` along axis 0 to ``num_rows`` rows.

    Padded rows have labels -100 and attention_mask 0 (see ``DEFAULT_PAD_VALUES``), so they
    add nothing to loss sums, counts or metrics. Used for the last, partial batch of an epoch
    or an evaluation, which is padded, never dropped.
    """
    values = {**DEFAULT_PAD_VALUES, **(pad_values or {})}
    out = {}
    for name, array in batch.items():
        missing = num_rows - array.shape[0]
        if missing < 0:
            raise ValueError(f"pad_rows: '{name}' has {array.shape[0]} rows, more than {num_rows}.")
        if missing == 0:
            out[name] = array
            continue
        fill = np.full((missing, *array.shape[1:]), values.get(name, 0), dtype=array.dtype)
        out[name] = np.concatenate([array, fill], axis=0)
    return out


def data_parallel_size(mesh: Mesh) -> int:
    """Number of devices a batch is split over."""
    return int(mesh.shape[DATA_AXIS])


def prefetch_to_device(
    items: Iterable[T], put: Callable[[T], Any], size: int = 2
) -> Iterator[tuple[T, Any]]:
    """Yield ``(item, put(item))`` with ``size`` items already transferred ahead.

    ``device_put`` is asynchronous, so the next batches travel to the devices (and the host
    collates them) while the current step runs.
    """
    queue: deque[tuple[T, Any]] = deque()
    for item in items:
        queue.append((item, put(item)))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
