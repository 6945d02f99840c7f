"""Hugging Face safetensors <-> NNX parameters, driven by one table per family.

A family describes its checkpoint as a :class:`WeightTable`: rules pairing a Hugging Face key
template with an NNX path template (``{layer}`` matches a layer index on both sides) and a
transform (PyTorch `nn.Linear` weights are `[out, in]`, `nnx.Linear` kernels `[in, out]`). The
same table drives loading and saving, and every problem found while loading is collected into one
error message.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import DTypeLike
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from flaxtrainer.errors import ModelLoadError
from flaxtrainer.models.crf import PARAM_NAMES as CRF_PARAM_NAMES

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
_OTHER_WEIGHT_FILES = (
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
)


# ---- rules ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    """How a tensor changes between the Hugging Face (PyTorch) and the NNX layout."""

    name: str
    to_nnx: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    nnx_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


IDENTITY = Transform("identity", lambda a: a, lambda a: a, lambda s: s)
TRANSPOSE = Transform("transpose", lambda a: a.T, lambda a: a.T, lambda s: s[::-1])


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>\\d+)" for i, part in enumerate(parts)
    )
    return re.compile(pattern)


@dataclasses.dataclass(frozen=True)
class WeightRule:
    """One Hugging Face key template <-> one NNX path template (dot-separated)."""

    hf: str
    nnx: str
    transform: Transform = IDENTITY

    @functools.cached_property
    def hf_regex(self) -> re.Pattern[str]:
        return _template_regex(self.hf)

    @functools.cached_property
    def nnx_regex(self) -> re.Pattern[str]:
        return _template_regex(self.nnx)


def linear(hf: str, nnx_path: str) -> tuple[WeightRule, ...]:
    """Rules for a PyTorch `nn.Linear` stored at `hf` and an `nnx.Linear` at `nnx_path`."""
    return (
        WeightRule(f"{hf}.weight", f"{nnx_path}.kernel", TRANSPOSE),
        WeightRule(f"{hf}.bias", f"{nnx_path}.bias"),
    )


def layer_norm(hf: str, nnx_path: str) -> tuple[WeightRule, ...]:
    return (
        WeightRule(f"{hf}.weight", f"{nnx_path}.scale"),
        WeightRule(f"{hf}.bias", f"{nnx_path}.bias"),
    )


def embedding(hf: str, nnx_path: str) -> tuple[WeightRule, ...]:
    return (WeightRule(f"{hf}.weight", f"{nnx_path}.embedding"),)


HEAD_RULES = linear("classifier", "classifier")
#: The CRF layer of a model with `config.crf` (flaxtrainer.models.crf): `crf.transitions` [L, L]
#: (from tag i to tag j), `crf.start_transitions` [L], `crf.end_transitions` [L], float32, next
#: to the classifier. Part of the head (reinitialised with it), and optional: a checkpoint
#: without them loads with a new, zero CRF. PyTorch `transformers` has no CRF and reports them
#: as unexpected keys, which it ignores.
CRF_RULES = tuple(WeightRule(f"crf.{name}", f"crf.{name}") for name in CRF_PARAM_NAMES)


@dataclasses.dataclass(frozen=True)
class WeightTable:
    """A family's checkpoint layout.

    `backbone` rules are relative to the base-model prefix on the Hugging Face side (`"bert."`)
    and to `model.encoder` on the NNX side. Base-model exports (e.g. sentence-transformers) store
    the same keys without the prefix; both spellings load. `head` rules are the
    token-classification head (`classifier`), reinitialised for new labels. `outside` rules are
    pretrained keys outside the prefix that load like the encoder and are kept when the
    classifier is reinitialised (ModernBERT's prediction head `head.*`); their NNX paths are
    relative to the token-classification model.
    """

    prefix: str
    backbone: tuple[WeightRule, ...]
    head: tuple[WeightRule, ...] = HEAD_RULES
    outside: tuple[WeightRule, ...] = ()

    def to_nnx(self, key: str) -> tuple[str, Transform, bool] | None:
        """`(nnx path, transform, is_head)` for a checkpoint key, or None if the key is unused."""
        key = _legacy_rename(key)
        found = _match(self.outside, key, to_nnx=True)
        if found is not None:
            return found[0], found[1], False
        if key.startswith(self.prefix):
            found = _match(self.backbone, key[len(self.prefix) :], to_nnx=True)
            return None if found is None else (f"encoder.{found[0]}", found[1], False)
        found = _match(self.head, key, to_nnx=True) or _match(CRF_RULES, key, to_nnx=True)
        if found is not None:
            return found[0], found[1], True
        found = _match(self.backbone, key, to_nnx=True)
        return None if found is None else (f"encoder.{found[0]}", found[1], False)

    def to_hf(self, path: str) -> tuple[str, Transform]:
        """`(checkpoint key, transform)` for an NNX parameter path."""
        if path.startswith("encoder."):
            found = _match(self.backbone, path[len("encoder.") :], to_nnx=False)
            if found is not None:
                return self.prefix + found[0], found[1]
        found = (
            _match(self.outside, path, to_nnx=False)
            or _match(self.head, path, to_nnx=False)
            or _match(CRF_RULES, path, to_nnx=False)
        )
        if found is None:
            raise KeyError(f"no weight rule maps the NNX parameter {path!r} to a checkpoint key")
        return found


def _match(rules: Iterable[WeightRule], name: str, *, to_nnx: bool) -> tuple[str, Transform] | None:
    for rule in rules:
        regex, target = (rule.hf_regex, rule.nnx) if to_nnx else (rule.nnx_regex, rule.hf)
        found = regex.fullmatch(name)
        if found:
            return target.format(**found.groupdict()), rule.transform
    return None


def _legacy_rename(key: str) -> str:
    """Old TF-converted checkpoints name LayerNorm parameters gamma/beta."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


# ---- reading and writing files --------------------------------------------------------------------


class SafetensorsCheckpoint:
    """Lazy, memory-mapped view of `model.safetensors` or of shards listed in the index file."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        single, index = folder / SAFETENSORS_NAME, folder / SAFETENSORS_INDEX_NAME
        if single.is_file():
            self.source = str(single)
            files = {single: None}
        elif index.is_file():
            self.source = str(index)
            files = _read_index(index)
        else:
            raise ModelLoadError(_no_safetensors_message(folder))
        self._handles = {}
        self._file_of: dict[str, Path] = {}
        for path, expected in files.items():
            try:
                handle = safe_open(str(path), framework="np")
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from exc
            self._handles[path] = handle.__enter__()
            present = set(handle.keys())
            if expected is not None and not expected <= present:
                missing = sorted(expected - present)
                raise ModelLoadError(
                    f"{index}: lists {len(missing)} tensors in {path.name} that it does not "
                    f"contain (e.g. {missing[:3]}); the shards and the index do not belong together"
                )
            for key in present if expected is None else expected:
                self._file_of[key] = path

    def __enter__(self) -> SafetensorsCheckpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases the memory maps (arrays already read stay valid)."""
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()

    def keys(self) -> list[str]:
        return list(self._file_of)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handles[self._file_of[key]].get_slice(key).get_shape())

    def read(self, key: str) -> np.ndarray:
        return self._handles[self._file_of[key]].get_tensor(key)


def _read_index(index: Path) -> dict[Path, set[str]]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{index}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    except (KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{index}: no 'weight_map' object mapping tensor names to shard files"
        ) from exc
    files: dict[Path, set[str]] = {}
    for key, name in weight_map.items():
        files.setdefault(index.parent / name, set()).add(key)
    missing = sorted(p.name for p in files if not p.is_file())
    if missing:
        raise ModelLoadError(f"{index}: shard files missing from {index.parent}: {missing}")
    return files


def _no_safetensors_message(folder: Path) -> str:
    present = [name for name in _OTHER_WEIGHT_FILES if (folder / name).is_file()]
    message = f"{folder}: no {SAFETENSORS_NAME} (or {SAFETENSORS_INDEX_NAME}) found"
    if not present:
        return message + (
            "; the folder holds no model weights (hub downloads fetch safetensors only: "
            "if the repo has just pytorch_model.bin, download it and convert it to safetensors)"
        )
    architecture = "AutoModel"
    try:
        architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        pass
    return (
        f"{message}, only {', '.join(present)}. flaxtrainer reads safetensors weights only. "
        "Convert the folder once where PyTorch is installed:\n"
        f'  python -c "from transformers import {architecture} as M; '
        f"M.from_pretrained('{folder}').save_pretrained('{folder}')\"\n"
        "(transformers >= 4.35 writes model.safetensors by default)"
    )


def write_safetensors(tensors: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Writes `tensors` as a PyTorch-flavoured safetensors file (what transformers expects)."""
    contiguous = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(contiguous, str(path), metadata={"format": "pt"})
    # safetensors creates the file 0600; give it the mode every other output gets (umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# ---- NNX side -------------------------------------------------------------------------------------


def _params(model: nnx.Module) -> Iterator[tuple[str, nnx.Param]]:
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            yield ".".join(str(p) for p in path), node


@dataclasses.dataclass
class LoadReport:
    """What happened to each checkpoint tensor: loaded, skipped head, or unused."""

    loaded: list[str] = dataclasses.field(default_factory=list)
    skipped_head: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)


def load_weights(
    model: nnx.Module,
    checkpoint: SafetensorsCheckpoint,
    table: WeightTable,
    *,
    load_head: bool,
    param_dtype: DTypeLike = jnp.float32,
) -> LoadReport:
    """Fills `model`'s parameters (possibly abstract, from `nnx.eval_shape`) from `checkpoint`.

    With `load_head=False` the classifier parameters are left as they are; so are CRF
    parameters (`CRF_RULES`) the checkpoint lacks (the caller initialises them). Shape mismatches,
    missing tensors and tensors without a place in the model are all reported in one
    :class:`ModelLoadError`.
    """
    params = dict(_params(model))
    report, problems = LoadReport(), []
    plan: dict[str, tuple[str, Transform]] = {}
    for key in checkpoint.keys():
        mapped = table.to_nnx(key)
        if mapped is None:
            report.unused.append(key)
            continue
        path, transform, is_head = mapped
        if is_head and not load_head:
            report.skipped_head.append(key)
            continue
        if path not in params and _match(CRF_RULES, key, to_nnx=True):
            report.unused.append(key)  # a CRF the model was built without (crf=False)
            continue
        if path not in params:
            problems.append(
                f"{key}: no such parameter in the model described by config.json ({path})"
            )
            continue
        if path in plan:
            problems.append(f"{key}: duplicates {plan[path][0]} (both map to {path})")
            continue
        expected = tuple(params[path].get_value().shape)
        got = transform.nnx_shape(checkpoint.shape(key))
        if got != expected:
            problems.append(
                f"{key}: checkpoint shape {checkpoint.shape(key)}, model expects "
                f"{transform.nnx_shape(expected)} (from config.json)"
            )
        plan[path] = (key, transform)
    wanted = {p for p in params if load_head or _match(table.head, p, to_nnx=False) is None}
    optional = {p for p in params if _match(CRF_RULES, p, to_nnx=False)}
    for path in sorted(wanted - set(plan) - optional):
        problems.append(f"missing tensor {table.to_hf(path)[0]} (for {path})")
    if problems:
        raise ModelLoadError(
            f"{checkpoint.source}: {len(problems)} problem(s) loading weights:\n  "
            + "\n  ".join(problems)
            + "\nconfig.json and the weights must describe the same model."
        )
    for path, (key, transform) in plan.items():
        params[path].set_value(
            jnp.asarray(transform.to_nnx(checkpoint.read(key)), dtype=param_dtype)
        )
        report.loaded.append(key)
    return report


def export_weights(model: nnx.Module, table: WeightTable) -> dict[str, np.ndarray]:
    """The model's parameters as a float32 Hugging Face state dict (PyTorch layouts)."""
    tensors = {}
    for path, param in _params(model):
        key, transform = table.to_hf(path)
        tensors[key] = transform.to_hf(np.asarray(param.get_value(), dtype=np.float32))
    return tensors
