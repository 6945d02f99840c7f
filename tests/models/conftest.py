"""Fixtures for the model tests: tiny random Hugging Face checkpoints in a tmp folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hf_reference import randomize_, tiny_hf_config


@dataclasses.dataclass
class Checkpoint:
    path: Path
    torch_model: object
    hf_config: object


@pytest.fixture
def make_checkpoint(tmp_path):
    """`make_checkpoint(model_type, head="token"|"base"|"mlm", **config_overrides)`."""

    def make(
        model_type: str,
        head: str = "token",
        subdir: str | None = None,
        save_kwargs=None,
        **overrides,
    ):
        import torch
        from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForTokenClassification

        config = tiny_hf_config(model_type, **overrides)
        auto = {
            "token": AutoModelForTokenClassification,
            "base": AutoModel,
            "mlm": AutoModelForMaskedLM,
        }[head]
        torch.manual_seed(0)
        model = randomize_(auto.from_config(config))
        path = tmp_path / (subdir or f"{model_type}-{head}")
        model.save_pretrained(path, **(save_kwargs or {}))
        return Checkpoint(path, model, config)

    return make
