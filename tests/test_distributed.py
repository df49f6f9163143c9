"""torch.distributed training: two processes on loopback end with the weights of one process
running the same global meta-batch (and a resumed two-process run continues it, its plateau
schedule too: process 0 validates and hands every process its learning rate). SGD, not Adam:
Adam divides by the gradient's size, so it turns float noise in gradients that are ~0 (ProtoNet's
last bias: distances ignore a shared shift) into whole steps, and the comparison would be noise."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewshot.engine.checkpoint import checkpoint_weights

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(out: Path, args: list[str], world: int) -> None:
    cmd = [sys.executable, "-m", "fewshot", "train", "--dataset", "digits", "--way", "3", "--shot", "2", "--query", "2",
           "--tasks-per-step", "4", "--val-fraction", "0", "--seed", "0", "--lr", "0.05", "--optimizer", "sgd", "--schedule", "constant", "--device", "cpu", "--threads", "1",
           "--quiet", "--no-plots", "--out", str(out), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    if world == 1:  # the reference, in this process
        from click.testing import CliRunner

        from fewshot.cli import main

        res = CliRunner().invoke(main, cmd[3:], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return
    port = str(_free_port())
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world),
                                        "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(world)]
    for rank, p in enumerate(procs):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"process {rank} of {world}: " + err.decode()[-2000:]


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_two_processes_match_one(tmp_path, method):
    extra = ["--method", method, "--backbone", "mlp"] + (["-p", "way=3", "-p", "inner_steps=2"] if method == "maml" else
                                                         ["--schedule", "plateau", "--plateau-patience", "0", "--val-fraction",
                                                          "0.3", "--val-every", "1", "--val-tasks", "4"])
    steps = "6" if method == "protonet" else "4"
    _train(tmp_path / "one", extra + ["--episodes", steps], world=1)
    if method == "protonet":  # stopped after 2 steps, resumed to 6 (--override: steps changed): the same run
        _train(tmp_path / "two", extra + ["--episodes", "2"], world=2)
        _train(tmp_path / "two", extra + ["--episodes", steps, "--resume", "--override"], world=2)
    else:  # second-order meta-gradients all-reduced
        _train(tmp_path / "two", extra + ["--episodes", "4"], world=2)
    one, two = checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6, msg=k)
    if method == "protonet":  # lowered at validations 2 and 3 (a process that missed either would differ)
        states = [json.loads((tmp_path / run / "last.json").read_text())["state"] for run in ("one", "two")]
        assert states[0]["schedule"] == states[1]["schedule"] and states[1]["schedule"]["lr"] < 0.05 / 2
    log = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(log) >= 1  # process 0 alone writes the log
