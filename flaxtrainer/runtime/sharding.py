"""Data parallelism: the device mesh, putting host batches on it, and padding partial batches.

Parameters and optimizer state are replicated; every batch is split along its row axis over
the mesh axis ``"data"``. Under ``jax.jit`` this has the semantics of the classic pmap loop
(a ``jnp.sum`` over the batch is a global reduction), and the same code spans several hosts:
with several processes, :func:`assemble_rows` builds a global batch from the rows each process
holds, and :func:`to_host` gathers sharded results from all of them.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

T = TypeVar("T")


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
    """Put a pytree (params, optimizer state) on every device of ``mesh``.

    On a mesh that spans several processes every leaf is built from its host value with
    ``make_array_from_callback``: ``jax.device_put`` of a device array onto such a mesh gives,
    with one device per process, arrays whose shards cannot be read back (orbax fails to save
    them: "the input arrays must have one shard each").
    """
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def put_batch(
    batch: Mapping[str, np.ndarray], mesh: Mesh, batch_axis: int = 0
) -> dict[str, jax.Array]:
    """The whole global batch (the same on every process) -> global arrays sharded on ``"data"``
    along ``batch_axis``; each process transfers only the rows of its own devices.

    (The trainer's multi-host path, where each process holds only its own rows, is
    :func:`assemble_rows`.)
    """
    sharding = batch_sharding(mesh, batch_axis)
    if sharding.is_fully_addressable:
        return jax.device_put(dict(batch), sharding)
    return {
        name: jax.make_array_from_callback(array.shape, sharding, lambda index, a=array: a[index])
        for name, array in batch.items()
    }


def to_host(tree: Any) -> Any:
    """Fetch device arrays to host numpy; blocks until they are computed.

    Arrays sharded over several processes are gathered, so every process gets the full value:
    a collective, which every process must call at the same point.
    """

    def fetch(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.device_get(jax.tree.map(fetch, tree))


def mesh_processes(mesh: Mesh) -> int:
    """Number of processes owning devices of ``mesh``; checks each owns as many devices.

    The batch is split evenly over devices, so every process must hold the same number of them.
    """
    counts: dict[int, int] = {}
    for device in mesh.devices.flat:
        counts[device.process_index] = counts.get(device.process_index, 0) + 1
    if len(set(counts.values())) != 1 or sorted(counts) != list(range(len(counts))):
        raise ValueError(
            f"The mesh must span processes 0..N-1 with the same number of devices each; it has "
            f"{dict(sorted(counts.items()))} devices per process. Build it from jax.devices()."
        )
    return len(counts)


@functools.lru_cache(maxsize=64)
def process_rows(mesh: Mesh, num_rows: int) -> tuple[np.ndarray, ...]:
    """For each process, the global row indices its devices hold when ``num_rows`` rows are
    sharded on ``"data"`` (ascending). ``make_array_from_process_local_data`` fills exactly these
    rows, in this order, from the process's local block."""
    rows: dict[int, list[int]] = {}
    index_map = NamedSharding(mesh, P(DATA_AXIS)).devices_indices_map((num_rows,))
    for device, (index,) in index_map.items():
        rows.setdefault(device.process_index, []).extend(range(*index.indices(num_rows)))
    return tuple(np.array(sorted(set(rows[p])), np.int64) for p in sorted(rows))


def assemble_rows(
    local: Mapping[str, np.ndarray],
    source_rows: np.ndarray,
    mesh: Mesh,
    batch_axis: int = 0,
    *,
    pad_values: Mapping[str, int],
    segment_name: str | None = None,
) -> dict[str, jax.Array]:
    """A global batch from (partial) rows spread over processes, in a row order the caller
    chooses.

    Each process passes ``local``: arrays ``[*leading, C, width]`` holding its own rows (``C`` is
    the same on every process; unused rows are ignored). Stacked over processes they form a
    global array whose rows :func:`process_rows` locates. ``source_rows`` ``[*leading, rows, K]``,
    the same on every process, gives for each row of the result up to ``K`` global rows to merge
    (``-1``: none; a row with none is a padding row). Padding is filled with ``pad_values`` by
    array name (the batch format's, e.g. labels -100; other names 0). Several sources of a row are partial rows, each holding its tokens where its
    ``segment_name`` array is nonzero (packed rows: segment ids); a token no source holds is
    padding. Without ``segment_name`` a row must have at most one source. The result is sharded
    on ``"data"`` along ``batch_axis == len(leading)``, exactly as if one process had built it.
    """
    sharding = batch_sharding(mesh, batch_axis)
    processes = mesh_processes(mesh)
    global_arrays = {}
    for name, array in local.items():
        shape = (
            *array.shape[:batch_axis],
            processes * array.shape[batch_axis],
            *array.shape[batch_axis + 1 :],
        )
        global_arrays[name] = jax.make_array_from_process_local_data(sharding, array, shape)
    sources = jax.make_array_from_process_local_data(
        replicated(mesh), np.asarray(source_rows, np.int32)
    )
    pads = tuple(sorted(pad_values.items()))
    return _row_gather(mesh, batch_axis, pads, segment_name)(global_arrays, sources)


@functools.lru_cache(maxsize=16)
def _row_gather(
    mesh: Mesh, batch_axis: int, pads: tuple[tuple[str, int], ...], segment_name: str | None
) -> Callable:
    """Jitted ``(arrays, sources) -> rows merged from arrays[..., sources[..., k], :]`` with
    padding filled (see :func:`assemble_rows`)."""
    pad_of = dict(pads)

    def gather(arrays: dict[str, jax.Array], sources: jax.Array) -> dict[str, jax.Array]:
        def take(x: jax.Array, k: int) -> jax.Array:
            flat = x.reshape(-1, *x.shape[batch_axis:])
            index = jnp.maximum(sources[..., k], 0).reshape(flat.shape[0], -1)
            rows = jax.vmap(lambda a, i: a[i])(flat, index)
            return rows.reshape(*sources.shape[:-1], *x.shape[batch_axis + 1 :])

        def expand(mask: jax.Array, x: jax.Array) -> jax.Array:
            return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))

        held = []  # per source: which tokens of the result it holds
        for k in range(sources.shape[-1]):
            valid = sources[..., k] >= 0
            if segment_name is None:
                held.append(expand(valid, arrays[next(iter(arrays))]))
            else:
                segment = take(arrays[segment_name], k)
                held.append(expand(valid, segment) & (segment != 0))
        out = {}
        for name, x in arrays.items():
            merged = jnp.full(
                (*sources.shape[:-1], *x.shape[batch_axis + 1 :]), pad_of.get(name, 0), x.dtype
            )
            for k, mask in enumerate(held):
                merged = jnp.where(mask, take(x, k), merged)
            out[name] = merged
        return out

    return jax.jit(gather, out_shardings=batch_sharding(mesh, batch_axis))


def pad_rows(
    batch: Mapping[str, np.ndarray], num_rows: int, pad_values: Mapping[str, int]
) -> dict[str, np.ndarray]:
    """Pad every array of ``batch`` along axis 0 to ``num_rows`` rows, filled with
    ``pad_values`` by array name (other names: 0).

    The batch format's pad values (``batching.batch_format``) give padded rows labels -100 and
    attention_mask 0, so they add nothing to loss sums, counts or metrics. Used for the last,
    partial batch of an epoch or an evaluation, which is padded, never dropped.
    """
    out = {}
    for name, array in batch.items():
        missing = num_rows - array.shape[0]
        if missing < 0:
            raise ValueError(f"pad_rows: '{name}' has {array.shape[0]} rows, more than {num_rows}.")
        if missing == 0:
            out[name] = array
            continue
        fill = np.full((missing, *array.shape[1:]), pad_values.get(name, 0), dtype=array.dtype)
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
