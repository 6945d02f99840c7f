"""The README shows only names that exist: every `from X import A, B` in it imports, and every
`--flag` it names is one the command line accepts."""

import importlib
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_import_shown_in_the_readme_exists():
    imports = re.findall(r"from (flaxtrainer[\w.]*) import ([\w, ]+)", README)
    assert len(imports) >= 5
    for module, names in imports:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"README: {module}.{name} does not exist"


def test_every_flag_named_in_the_readme_is_accepted():
    from flaxtrainer.cli.main import predict_parser, train_parser

    help_text = train_parser().parser.format_help() + predict_parser().parser.format_help()
    flags = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_]+)", README))
    assert {"label_scheme", "strict_labels", "report_to", "profile_steps"} <= flags
    # tensorboard's, the benchmark scripts' (benchmarks/run.py, benchmarks/profile_run.py), pip's
    other_tools = {"logdir", "only", "out", "runs", "repeat", "variant", "no_deps"}
    missing = sorted(f for f in flags - other_tools if f"--{f}" not in help_text)
    assert not missing, f"README names flags the CLI does not know: {missing}"
