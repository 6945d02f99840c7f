"""JAX's multi-controller runtime: starting it, and the few cross-process helpers the trainer needs.

A multi-host run is one Python process per host (or per GPU), all running the same program.
:func:`initialize_distributed` connects them through ``jax.distributed.initialize`` and must run
before anything else touches JAX (``jax.devices()``, creating arrays, loading a model). Where
the settings come from, first match wins:

1. explicit arguments (the ``--coordinator_address``, ``--num_processes``, ``--process_id``
   flags of :class:`~flaxtrainer.TrainingArguments`);
2. the environment: ``FLAXTRAINER_COORDINATOR_ADDRESS``, ``FLAXTRAINER_NUM_PROCESSES``,
   ``FLAXTRAINER_PROCESS_ID``, ``FLAXTRAINER_LOCAL_DEVICE_IDS`` (comma-separated);
3. a cluster JAX recognises (SLURM, Open MPI, Cloud TPU pod slices, Kubernetes) that runs more
   than one process: ``jax.distributed.initialize()`` then reads everything from it.

Otherwise (a plain machine, or a cluster job of one process) it does nothing, so one program
serves laptops and clusters. See docs/multihost.md for launch recipes.

JAX is imported inside the functions: ``TrainingArguments`` validates its multi-host flags
with :func:`check_settings`, and the command line's ``--help`` must not pay for JAX.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ENV_COORDINATOR_ADDRESS = "FLAXTRAINER_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "FLAXTRAINER_NUM_PROCESSES"
ENV_PROCESS_ID = "FLAXTRAINER_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "FLAXTRAINER_LOCAL_DEVICE_IDS"


@dataclass(frozen=True)
class DistributedInfo:
    """What :func:`initialize_distributed` did: ``source`` is ``"arguments"``, ``"environment"``,
    ``"cluster:<name>"``, ``"already initialized"`` or ``None`` (single process, nothing done)."""

    process_index: int
    process_count: int
    source: str | None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | None = None,
    *,
    initialization_timeout: int = 300,
) -> DistributedInfo:
    """Join the processes of a multi-host run (see the module docstring for the sources).

    A no-op on a single machine. Call it first, before any other JAX call; calling it again
    (or after ``jax.distributed.initialize``) is harmless. On CPU, cross-process collectives
    use gloo unless ``jax_cpu_collectives_implementation`` is already set.
    """
    import jax

    if jax.distributed.is_initialized():
        return DistributedInfo(jax.process_index(), jax.process_count(), "already initialized")

    coordinator_address, num_processes, process_id, local_device_ids, source = _settings(
        coordinator_address, num_processes, process_id, local_device_ids
    )
    if source is None:
        cluster = detect_cluster()
        if cluster is None:
            return DistributedInfo(0, 1, None)
        source = f"cluster:{cluster}"
    elif num_processes == 1:
        logger.info("num_processes=1: a single-process run, jax.distributed is not started.")
        return DistributedInfo(0, 1, None)
    elif None in (coordinator_address, num_processes, process_id):
        cluster = detect_cluster()  # JAX fills in what the cluster knows
        if cluster is None:
            raise ValueError(_incomplete(source, coordinator_address, num_processes, process_id))
        source = f"{source} + cluster:{cluster}"

    if _jax_started():
        raise RuntimeError(
            "initialize_distributed() must run before any other JAX call, but JAX is already "
            "in use in this process (jax.devices(), an array or a model was created first). "
            "Call it first thing in your script, right after the imports."
        )
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logger.info(
        "Starting jax.distributed (%s): coordinator %s, process %s of %s.",
        source,
        coordinator_address or "auto",
        "auto" if process_id is None else process_id,
        num_processes or "auto",
    )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    info = DistributedInfo(jax.process_index(), jax.process_count(), source)
    logger.info(
        "Process %d of %d: %d local device(s), %d in all.",
        info.process_index,
        info.process_count,
        jax.local_device_count(),
        jax.device_count(),
    )
    return info


def _incomplete(
    source: str, coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> str:
    missing = [
        flag
        for flag, value in (
            (f"--coordinator_address HOST:PORT ({ENV_COORDINATOR_ADDRESS})", coordinator_address),
            (f"--num_processes N ({ENV_NUM_PROCESSES})", num_processes),
            (f"--process_id I ({ENV_PROCESS_ID})", process_id),
        )
        if value is None
    ]
    return (
        f"Multi-host settings ({source}) are incomplete and no cluster was detected to supply "
        f"the rest: also give {', '.join(missing)}. The coordinator is process 0's address and "
        "a free port, the same on every process."
    )


def _jax_started() -> bool:
    """Whether JAX's backends exist already (then jax.distributed can no longer start)."""
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return False  # jax.distributed.initialize raises its own error then


def _settings(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    local_device_ids: Sequence[int] | None,
) -> tuple[str | None, int | None, int | None, list[int] | None, str | None]:
    """Arguments, else ``FLAXTRAINER_*`` environment variables, field by field; the source is
    the first of "arguments"/"environment" that set anything, else None."""
    given = (coordinator_address, num_processes, process_id, local_device_ids)
    source = "arguments" if any(v is not None for v in given) else None
    env = os.environ
    if coordinator_address is None:
        coordinator_address = env.get(ENV_COORDINATOR_ADDRESS) or None
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID)
    if local_device_ids is None and env.get(ENV_LOCAL_DEVICE_IDS):
        local_device_ids = _env_ints(ENV_LOCAL_DEVICE_IDS)
    if source is None and any(
        v is not None for v in (coordinator_address, num_processes, process_id, local_device_ids)
    ):
        source = "environment"
    if local_device_ids is not None:
        local_device_ids = [int(i) for i in local_device_ids]
    check_settings(coordinator_address, num_processes, process_id)
    return coordinator_address, num_processes, process_id, local_device_ids, source


def check_settings(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Raise ValueError naming the bad setting (also used by ``TrainingArguments``)."""
    if coordinator_address is not None:
        host, sep, port = str(coordinator_address).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"coordinator_address must be HOST:PORT (process 0's address and a free port), "
                f"got {coordinator_address!r}."
            )
    if num_processes is not None and (
        isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1
    ):
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}.")
    if process_id is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0:
            raise ValueError(f"process_id must be an integer >= 0, got {process_id!r}.")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(
                f"process_id must be below num_processes ({num_processes}), got {process_id}."
            )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"Environment variable {name} must be an integer, got {value!r}."
        ) from None


def _env_ints(name: str) -> list[int]:
    value = os.environ[name]
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"Environment variable {name} must be comma-separated integers, got {value!r}."
        ) from None


def detect_cluster() -> str | None:
    """Name of the cluster environment JAX would auto-detect, if it runs more than one process.

    Asks JAX's own detectors (``jax._src.clusters``: SLURM, Open MPI, Cloud TPU, Kubernetes) in
    JAX's order; a detected job of a single process (``srun -n1``, a one-host TPU VM) counts as
    no cluster. Returns None when JAX's private detection API is missing or fails (logged).
    """
    try:
        from jax._src import clusters
    except ImportError:  # pragma: no cover - private API moved
        logger.debug("jax._src.clusters is unavailable: no automatic cluster detection.")
        return None
    for env in clusters.ClusterEnv._cluster_types:
        if getattr(env, "opt_in_only_method", False):
            continue
        try:
            if not env.is_env_present():
                continue
            count = int(env.get_process_count())
        except Exception as err:  # noqa: BLE001 - a detector must never break a local run
            logger.warning("Cluster detection with %s failed (%s); ignoring it.", env.__name__, err)
            continue
        name = getattr(env, "name", "") or env.__name__
        if count > 1:
            return name
        logger.info("Detected a %s job of one process: running single-process.", name)
        return None
    return None


def check_runtime(args: Any) -> None:
    """Raise if ``args`` (``TrainingArguments``) ask for a multi-host run that JAX is not part
    of, e.g. the flags were given but :func:`initialize_distributed` was never called (every
    process would then train alone and overwrite the others' files)."""
    import jax

    wanted = getattr(args, "num_processes", None)
    if wanted is not None and wanted != jax.process_count():
        raise RuntimeError(
            f"num_processes={wanted} but JAX runs {jax.process_count()} process(es): call "
            "flaxtrainer.runtime.distributed.initialize_distributed(args.coordinator_address, "
            "args.num_processes, args.process_id) first thing, before any other JAX call."
        )
    process_id = getattr(args, "process_id", None)
    if process_id is not None and process_id != jax.process_index():
        raise RuntimeError(
            f"process_id={process_id} but JAX says this is process {jax.process_index()}."
        )


# ---------------------------------------------------------------------------------- helpers
def is_main_process() -> bool:
    """True on process 0, the one that writes logs, result files and the exported model."""
    import jax

    return jax.process_index() == 0


def allgather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` in process order, on every process (JSON, never pickle).

    ``obj`` is built of what :func:`encode_object` accepts: None, bools, numbers, strings,
    lists, tuples, dicts and numpy arrays / scalars (dtype and shape kept). It travels as UTF-8
    JSON in a ``uint8`` array padded to the longest process's payload, so what another process
    sends can never run code here. A collective: every process must call it at the same point.
    Single process: ``[obj]`` (not copied).
    """
    import jax

    if jax.process_count() == 1:
        return [obj]
    import numpy as np
    from jax.experimental import multihost_utils

    payload = np.frombuffer(encode_object(obj), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int64)))
    sizes = sizes.reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [decode_object(gathered[i, : int(n)].tobytes()) for i, n in enumerate(sizes)]


_TAG = "__flaxtrainer__"


def encode_object(obj: Any) -> bytes:
    """``obj`` as UTF-8 JSON that :func:`decode_object` turns back into an equal value.

    Tuples, dicts with non-string keys, numpy arrays and numpy scalars are wrapped in tagged
    objects so they come back with their type (arrays with dtype and shape); anything else that
    JSON cannot hold raises TypeError. Floats keep NaN and infinities.
    """
    import numpy as np

    def encode(value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf":
                raise TypeError(f"allgather_objects: cannot send a numpy array of {value.dtype}.")
            return {
                _TAG: "ndarray",
                "dtype": value.dtype.str,
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
        if isinstance(value, np.generic):
            return {_TAG: "scalar", "dtype": value.dtype.str, "value": value.item()}
        if isinstance(value, list):
            return [encode(v) for v in value]
        if isinstance(value, tuple):
            return {_TAG: "tuple", "items": [encode(v) for v in value]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                return {k: encode(v) for k, v in value.items()}
            return {_TAG: "dict", "items": [[encode(k), encode(v)] for k, v in value.items()]}
        raise TypeError(
            f"allgather_objects: cannot send a {type(value).__name__}; use None, bool, int, "
            "float, str, list, tuple, dict or numpy arrays."
        )

    return json.dumps(encode(obj), allow_nan=True, separators=(",", ":")).encode("utf-8")


def decode_object(data: bytes) -> Any:
    """The value that :func:`encode_object` encoded (plain JSON parsing: no code runs)."""
    import numpy as np

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        kind = value.get(_TAG)
        if kind is None:
            return {k: decode(v) for k, v in value.items()}
        if kind == "ndarray":
            dtype = np.dtype(value["dtype"])
            return np.asarray(value["data"], dtype=dtype).reshape(value["shape"])
        if kind == "scalar":
            return np.dtype(value["dtype"]).type(value["value"])
        if kind == "tuple":
            return tuple(decode(v) for v in value["items"])
        if kind == "dict":
            return {decode(k): decode(v) for k, v in value["items"]}
        raise ValueError(f"allgather_objects: unknown tagged value {kind!r}.")

    return decode(json.loads(data.decode("utf-8")))
