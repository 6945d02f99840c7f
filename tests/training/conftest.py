"""Shared fixtures for trainer tests."""

from __future__ import annotations

import pytest

from .toy import toy_args


@pytest.fixture
def make_args(tmp_path):
    """``make_args(**overrides)``: toy TrainingArguments in a temporary output_dir."""

    def make(**overrides):
        return toy_args(overrides.pop("output_dir", str(tmp_path / "out")), **overrides)

    return make
