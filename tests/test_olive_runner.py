"""Olive failures and prunes become PassFailed errors that name the pass and show its log."""

from __future__ import annotations

import pytest

from olive_flows.run.olive import PassFailed, run_workflow


def test_pruned_pass_is_named_with_olives_reason(tiny_job, tmp_path):
    config = tiny_job.config
    config["passes"]["build"] = {"type": "ModelBuilder", "precision": "fp16"}  # Olive prunes fp16 on a CPU target
    with pytest.raises(PassFailed) as info:
        run_workflow(tiny_job.name, config, tmp_path / "job.log")
    assert info.value.pass_name == "build"
    assert "FP16 is not supported on CPU" in str(info.value)
    assert "--- last 40 lines of" in str(info.value)


def test_failing_pass_is_named_with_the_exception(tiny_job, tmp_path):
    config = tiny_job.config
    config["passes"]["train"]["target_modules"] = ["no_such_proj"]
    with pytest.raises(PassFailed) as info:
        run_workflow(tiny_job.name, config, tmp_path / "job.log")
    assert info.value.pass_name == "train"
    assert "no_such_proj" in str(info.value)
    assert "Traceback" in (tmp_path / "job.log").read_text(encoding="utf-8"), "the full traceback is kept in the log"
