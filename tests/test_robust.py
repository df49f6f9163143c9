"""Issue 12: nothing lost, nothing silently wrong (data loss, torn checkpoints, locks, resume)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fewshot.cli import main


def cli(args, env=None):
    return CliRunner().invoke(main, args, env={"FEWSHOT_DATA": "", "XDG_CACHE_HOME": "/tmp/fewshot-test-cache", **(env or {})})


# ---------------------------------------------------------------- 1. demo --out never deletes what it did not create
def test_demo_refuses_a_foreign_non_empty_folder_and_keeps_other_files(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    res = cli(["demo", "--out", str(tmp_path), "--episodes", "2", "--tasks", "2", "--device", "cpu"])
    assert res.exit_code != 0 and "not empty" in res.output and "Traceback" not in res.output
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--episodes", "2", "--tasks", "2", "--device", "cpu"]
    assert cli(args).exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert cli(args).exit_code == 0  # a second demo into its own folder replaces only its own files
    assert (out / "notes.txt").read_text() == "mine" and (out / "results.json").exists()
