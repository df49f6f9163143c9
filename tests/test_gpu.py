"""Small end-to-end trainings and evaluations with ``--device cuda`` (skipped without a GPU)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU on this machine: the --device cuda trainings run where one is present")


@pytest.mark.parametrize("method,params", [("protonet", []), ("maml", ["-p", "way=3"]), ("matching", []),
                                           ("baseline", [])])
def test_train_and_eval_on_cuda(tmp_path, method, params):
    out = tmp_path / method
    common = ["--dataset", "digits", "--device", "cuda"]
    res = CliRunner().invoke(main, ["train", "--threads", "1", "--method", method, *common, "--way", "3", "--shot", "1", "--query", "3",
                                    "--tasks-per-step", "2", "--episodes", "6", "--val-tasks", "5", "--val-every", "3",
                                    "--quiet", "--no-plots", "--out", str(out), *params], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["eval", "--threads", "1", str(out), *common, "--way", "3", "--shot", "1", "--tasks", "10", "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert 0.0 <= json.loads(res.output.strip().splitlines()[-1])["accuracy"] <= 1.0
