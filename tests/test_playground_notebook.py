"""The notebook's settings in the playground network: its unit, loss, clipping readings, dropped
weights, the stability term, random inputs and the restart protocol."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.playground.boolean import all_boolean_functions, learnability_restarts, random_inputs, truth_table_inputs
from fewshot.playground.network import BatchedMLP, NetConfig


@pytest.mark.parametrize("loss", ["sse", "half_mean"])
def test_notebook_unit_and_loss_match_autograd(loss):
    cfg = NetConfig((3, 5, 4, 1), bias=False, gain=3.0, shift=1.0, loss=loss, init_scale=0.7)
    net = BatchedMLP.create(cfg, 2, seed=3, dtype=torch.float64)
    x = truth_table_inputs(3).double()
    t = torch.rand(2, 8, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = net.backward(net.forward(x), t)
    ws = [w.clone().requires_grad_(True) for w in net.weights]
    a = x.expand(2, -1, -1)
    for w in ws:
        a = torch.sigmoid(3.0 * (a @ w - 1.0))
    e = ((a - t) ** 2).sum() * (1 / 16 if loss == "half_mean" else 1)  # ½ Σ / 8 points
    e.backward()
    for mine, w in zip(grads.weights, ws):
        torch.testing.assert_close(mine, w.grad)
    # without bias the notebook's unit outputs σ(-3) at the origin, so f(000) = 1 is out of reach
    assert float(net(torch.zeros(1, 3))[0, 0, 0]) < 0.2


def test_clip_readings_and_per_layer_bounds():
    x, t = truth_table_inputs(3), torch.ones(1, 8, 1)
    big = NetConfig((3, 4, 1), init_scale=0.5, clip_weight=0.01, clip_bias=0.01, clip_mode="update")
    net = BatchedMLP.create(big, 1, seed=0)
    before = [w.clone() for w in net.weights]
    net.step(net.backward(net.forward(x), t), [100.0, 100.0])
    assert all(float((w - b).abs().max()) <= 0.01 + 1e-6 for w, b in zip(net.weights, before))  # the step is clipped
    assert float(before[0].abs().max()) > 0.01  # the weights themselves are not
    per = BatchedMLP.create(NetConfig((3, 4, 1), init_scale=2.0, clip_weight=(None, 0.5)), 1, seed=0)
    assert float(per.weights[0].abs().max()) > 0.5 and float(per.weights[1].abs().max()) <= 0.5
    with pytest.raises(ValueError, match="one bound per layer"):
        BatchedMLP.create(NetConfig((3, 4, 1), clip_weight=(1.0,)), 1)
    with pytest.raises(ValueError, match="clip_mode"):
        NetConfig((3, 4, 1), clip_mode="gradient")


def test_dropped_weights_stay_zero_and_stability_slows_learning():
    cfg = NetConfig((3, 8, 1), drop_weights=(0.5,), init_scale=1.0)
    net = BatchedMLP.create(cfg, 2, seed=0)
    dropped = net.masks[0] == 0
    assert 0 < int(dropped.sum()) < dropped.numel() and net.masks[1] is None
    x, t = truth_table_inputs(3), all_boolean_functions(3)[[105, 150]].unsqueeze(-1)
    net.train_steps(x, t, 50, [0.5, 0.5])
    assert bool((net.weights[0][dropped] == 0).all())
    assert torch.equal(net.select([1]).masks[0], net.masks[0][1:])
    stable = BatchedMLP.create(NetConfig((3, 8, 1), stability=0.1), 1, seed=0)
    plain = BatchedMLP.create(NetConfig((3, 8, 1)), 1, seed=0)
    for n in (stable, plain):
        n.train_steps(x, t[:1], 30, [0.5, 0.5])
    s = stable.stab[0]
    assert float(s.min()) >= 0 and float(s.max()) <= 1 and float(s.max()) > 0
    assert not torch.equal(stable.weights[0], plain.weights[0])
    with pytest.raises(ValueError, match="stability"):
        NetConfig((3, 8, 1), stability=2.0)


def test_random_inputs_and_restart_protocol():
    x = random_inputs(16, 8, seed=1)
    assert x.shape == (8, 16) and len({tuple(r.tolist()) for r in x}) == 8
    with pytest.raises(ValueError, match="distinct"):
        random_inputs(2, 8)
    tables = all_boolean_functions(3)[[0, 0b01101001, 0b00010110]]
    cfg = NetConfig((3, 8, 1), bias=True)
    res = learnability_restarts(cfg, tables, lr=0.5, levels=2, base=300)
    assert res.iterations.tolist() == [300 * 2 ** k if k >= 0 else -1 for k in res.level.tolist()]
    assert bool((res.final_sse[res.learnt] <= 0.25).all()) and bool((res.final_sse[~res.learnt] > 0.25).all())


def test_learnability_cli_exposes_the_settings(tmp_path):
    res = CliRunner().invoke(main, ["playground", "learnability", "--levels", "1", "--base", "50", "--hidden", "4",
                                    "--clip-weights", "none,1", "--clip-mode", "update", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "3-4-1" in res.output and "| this run |" in res.output
    bad = CliRunner().invoke(main, ["playground", "learnability", "--clip-weights", "1,1", "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "one bound per layer" in bad.output


def test_notebook_fewshot_cell_runs_and_counts(tmp_path):
    from fewshot.playground.boolean import notebook_fewshot

    cfg = NetConfig((3, 4, 1), bias=False, gain=3.0, shift=1.0, loss="half_mean", init_scale=0.05, clip_weight=1.0)
    res = notebook_fewshot(cfg, chains=2, tests=3, epochs=4, max_try=5, seed=0)
    assert res.ready.shape == res.error.shape == res.steps.shape == (2, 3)
    assert bool((res.functions % 2 == 0).all())  # f(000) = 0
    assert bool((res.ready >= 0).all() and (res.ready <= 4).all())
    assert bool((res.steps >= 4 * 8).all() and (res.steps <= 4 * 8 * 6).all())  # ≥ 1 and ≤ max_try+1 steps per visit
    res = CliRunner().invoke(main, ["playground", "notebook-fewshot", "--chains", "1", "--tests", "2", "--epochs", "2",
                                    "--out", str(tmp_path)])
    assert res.exit_code == 0 and "the notebook (its README" in res.output
