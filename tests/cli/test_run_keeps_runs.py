"""The README's flow in a relative --output_dir: train, resume with `--resume_from_checkpoint
latest`, then evaluate the trained folder in place without touching its training history."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from conftest import fast_flags

from flaxtrainer.cli.main import main


def run_main(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.mark.slow
def test_relative_output_dir_resume_and_eval_in_place(
    tmp_path, monkeypatch, capsys, tiny_bert, ner_files
):
    monkeypatch.chdir(tmp_path)
    data = ["--train_file", str(ner_files["train"]), "--validation_file",
            str(ner_files["validation"])]  # fmt: skip
    code, _ = run_main(fast_flags("./out", tiny_bert) + data + ["--do_train"])
    assert code == 0
    first = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert first["global_step"] == 3  # 48 sentences, 16 a step, one epoch

    # as the README and the SIGTERM message say: the same command plus "latest"
    capsys.readouterr()
    code, _ = run_main(
        fast_flags("./out", tiny_bert)
        + data
        + ["--do_train", "--num_train_epochs", "2", "--resume_from_checkpoint", "latest"]
    )
    assert code == 0
    # The log reads in order: a resume is announced before the base model's new head is.
    said = capsys.readouterr().err.splitlines()
    first_of = {k: next(i for i, m in enumerate(said) if k in m) for k in
                ("Resuming (--resume_from_checkpoint latest)", "initialised a new classifier",
                 "Resumed from")}  # fmt: skip
    assert list(first_of.values()) == sorted(first_of.values()), said
    state_file = tmp_path / "out" / "trainer_state.json"
    trained = state_file.read_text()
    assert json.loads(trained)["global_step"] == 6
    assert any(h.get("step") == 6 and "loss" in h for h in json.loads(trained)["log_history"])

    # evaluation only, pointed at the trained folder as model and output_dir
    code, _ = run_main(
        ["--model_name_or_path", "./out", "--output_dir", "./out", "--validation_file",
         str(ner_files["validation"]), "--do_eval", "--disable_tqdm", "--report_to", "none"]
    )  # fmt: skip
    assert code == 0
    assert state_file.read_text() == trained  # the training history is kept
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert "eval_f1" in results and "eval_loss" in results
