"""The playground: hand backprop equals autograd, the boolean enumeration, the few-shot loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot.playground.boolean import (all_boolean_functions, function_name, point_errors, threshold_fewshot,
                                        truth_table_inputs, zero_at_origin)
from fewshot.playground.network import BatchedMLP, NetConfig, layer_lrs


def _autograd_grads(net: BatchedMLP, x, target, point_weight=None):
    ws = [w.clone().requires_grad_(True) for w in net.weights]
    bs = [None if b is None else b.clone().requires_grad_(True) for b in net.biases]
    a = x
    for w, b in zip(ws, bs):
        z = a @ w + (0 if b is None else b.unsqueeze(1))
        a = torch.sigmoid(z) if net.config.activation == "sigmoid" else torch.tanh(z)
    sq = (a - target) ** 2
    if point_weight is not None:
        sq = sq * point_weight.unsqueeze(-1)
    sq.sum().backward()
    return [w.grad for w in ws], [None if b is None else b.grad for b in bs], sq.sum((1, 2))


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=4), batch=st.integers(1, 4), points=st.integers(1, 6),
       activation=st.sampled_from(["sigmoid", "tanh"]), bias=st.booleans(), weighted=st.booleans(),
       seed=st.integers(0, 10_000))
def test_hand_backward_matches_autograd(sizes, batch, points, activation, bias, weighted, seed):
    cfg = NetConfig(tuple(sizes), activation, bias=bias, init_scale=2.0)
    net = BatchedMLP.create(cfg, batch, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, points, sizes[0], generator=g, dtype=torch.float64)
    target = torch.rand(batch, points, sizes[-1], generator=g, dtype=torch.float64)
    pw = torch.rand(batch, points, generator=g, dtype=torch.float64) if weighted else None
    grads = net.backward(net.forward(x), target, pw)
    gw, gb, loss = _autograd_grads(net, x, target, pw)
    torch.testing.assert_close(grads.loss, loss.detach())
    for mine, ref in zip(grads.weights, gw):
        torch.testing.assert_close(mine, ref)
    for mine, ref in zip(grads.biases, gb):
        assert (mine is None) == (not bias)
        if mine is not None:
            torch.testing.assert_close(mine, ref)


def test_step_masks_networks_and_clips():
    cfg = NetConfig((3, 4, 1), clip_weight=0.3, clip_bias=0.1, init_scale=1.0)
    net = BatchedMLP.create(cfg, 3, seed=1)
    assert all(w.abs().max() <= 0.3 for w in net.weights) and all(b.abs().max() <= 0.1 for b in net.biases)
    before = net.clone()
    x = truth_table_inputs(3)
    net.step(net.backward(net.forward(x), torch.ones(3, 8, 1)), [1.0, 1.0], mask=torch.tensor([True, False, True]))
    assert torch.equal(net.weights[0][1], before.weights[0][1]) and torch.equal(net.biases[1][1], before.biases[1][1])
    assert not torch.equal(net.weights[1][0], before.weights[1][0])
    assert all(w.abs().max() <= 0.3 + 1e-7 for w in net.weights)


def test_slow_first_layer_learning_rate():
    assert layer_lrs(0.5, 3, slow_factor=0.1, slow_layers=2) == [0.05, 0.05, 0.5]
    cfg = NetConfig((3, 4, 1))
    net = BatchedMLP.create(cfg, 2, seed=0)
    w0 = net.weights[0].clone()
    net.train_steps(truth_table_inputs(3), torch.ones(8, 1), 5, layer_lrs(1.0, 2, slow_factor=0.0))
    assert torch.equal(net.weights[0], w0)  # a frozen first layer does not move


def test_deterministic_from_seed():
    cfg = NetConfig((3, 8, 1), "tanh", signed=True, bias=False)
    a, b = BatchedMLP.create(cfg, 4, seed=7), BatchedMLP.create(cfg, 4, seed=7)
    x, t = cfg.encode(truth_table_inputs(3)), cfg.encode(all_boolean_functions(3)[:4].unsqueeze(-1))
    assert torch.equal(a.train_steps(x, t, 20, [0.3, 0.3], mode="example", order_seed=3),
                       b.train_steps(x, t, 20, [0.3, 0.3], mode="example", order_seed=3))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="needs activation='tanh'"):
        NetConfig(signed=True)
    with pytest.raises(ValueError, match="one amplitude per layer"):
        NetConfig((3, 8, 1), init_scale=(1.0,))
    net = BatchedMLP.create(NetConfig((3, 8, 1)), 2)
    with pytest.raises(ValueError, match=r"inputs must be \[N, 3\]"):
        net(torch.zeros(5, 4))


def test_boolean_enumeration():
    x = truth_table_inputs(3)
    assert x.tolist()[0] == [0, 0, 0] and x.tolist()[5] == [1, 0, 1] and len(x) == 8
    tables = all_boolean_functions(3)
    assert tables.shape == (256, 8)
    assert len({function_name(t) for t in tables}) == 256  # all distinct
    assert int(zero_at_origin(tables).sum()) == 128
    assert function_name(tables[0b10010110]) == "01101001"  # parity: bit j of f is f(row j)
    parity = (x.sum(1) % 2)
    assert torch.equal(tables[0b10010110], parity)
    assert all_boolean_functions(2).shape == (16, 4)


def test_without_bias_output_at_origin_is_fixed():
    """Why f(000)=0 is needed: with no biases every pre-activation at 000 is 0. With tanh units the
    output there is tanh(0) = 0 whatever the weights; with sigmoid hidden units it is sigmoid(w2.sum()/2),
    and flipping the output weights complements the function (f and 1-f are equally learnable)."""
    x = truth_table_inputs(3)
    tanh_net = BatchedMLP.create(NetConfig((3, 8, 1), "tanh", bias=False, init_scale=5.0), 16, seed=0)
    assert torch.equal(tanh_net(x)[:, 0], torch.zeros(16, 1))
    sig = BatchedMLP.create(NetConfig((3, 8, 1), "sigmoid", bias=False, init_scale=3.0), 16, seed=0)
    torch.testing.assert_close(sig(x)[:, 0, 0], torch.sigmoid(0.5 * sig.weights[1].sum((1, 2))))
    flipped = sig.clone()
    flipped.weights[1].neg_()
    torch.testing.assert_close(flipped(x), 1 - sig(x))


# ---------------------------------------------------------------------- the few-shot loop
def _reference_loop(net: BatchedMLP, x, target, lrs, threshold, max_steps, max_presentations, order):
    """The loop for ONE network, written plainly: the specification the vectorised loop must match."""
    P = len(x)
    pres = [0] * P
    shots = steps = 0
    pos = -1
    while True:
        err = point_errors(net, x, target.unsqueeze(0))[0]
        if bool((err < threshold).all()):
            return shots, steps, True
        for j in range(1, P + 1):  # next wrongly answered point in cyclic order
            cand = (pos + j) % P
            if err[order[cand]] >= threshold:
                break
        pos = cand
        p = int(order[pos])
        if pres[p] >= max_presentations:
            return shots, steps, False
        pres[p] += 1
        shots += 1
        for _ in range(max_steps):
            net.step(net.backward(net.forward(x[p:p + 1]), target[p:p + 1].unsqueeze(0)), lrs)
            steps += 1
            if point_errors(net, x[p:p + 1], target[p:p + 1].unsqueeze(0))[0, 0] < threshold:
                break


def test_fewshot_loop_matches_plain_reference():
    cfg = NetConfig((3, 4, 1), bias=True, init_scale=1.0)
    x = truth_table_inputs(3)
    tables = all_boolean_functions(3)
    fs = [0b10010110, 0b11101000, 0b00000001, 0b01111110, 0b10101010, 0]
    nets = BatchedMLP.create(cfg, len(fs), seed=3, dtype=torch.float64)
    order = torch.stack([torch.randperm(8, generator=torch.Generator().manual_seed(i)) for i in range(len(fs))])
    targets = tables[fs].unsqueeze(-1).double()
    expected = []
    for b in range(len(fs)):
        single = nets.select([b])
        expected.append(_reference_loop(single, x.double(), targets[b], [2.0, 2.0], 0.05, 30, 4, order[b]))
    res = threshold_fewshot(nets, x.double(), targets, [2.0, 2.0], threshold=0.05, max_steps=30, max_presentations=4,
                            order=order)
    assert [(int(s), int(n), bool(ok)) for s, n, ok in zip(res.shots, res.steps, res.success)] == expected
    assert res.success.any() and (~res.success).any()  # the case mix exercises both endings
    err = point_errors(nets, x.double(), targets)
    assert bool((err[res.success] < 0.05).all())  # success means every point is below the threshold


def test_fewshot_loop_stops_at_once_when_nothing_to_learn():
    cfg = NetConfig((3, 4, 1))
    net = BatchedMLP.create(cfg, 3, seed=0)
    x = truth_table_inputs(3)
    target = net(x).detach().clone()  # the networks already compute their targets exactly
    w = [t.clone() for t in net.weights]
    res = threshold_fewshot(net, x, target, [1.0, 1.0], threshold=1e-6)
    assert res.success.all() and res.shots.tolist() == [0, 0, 0] and res.steps.tolist() == [0, 0, 0]
    assert all(torch.equal(a, b) for a, b in zip(w, net.weights))


def test_fewshot_loop_fails_exactly_after_the_presentation_budget():
    """With a zero learning rate nothing is learnt: every wrong point is presented exactly
    max_presentations times, each for exactly max_steps steps, then the loop gives up."""
    cfg = NetConfig((3, 4, 1))
    net = BatchedMLP.create(cfg, 2, seed=0)
    x = truth_table_inputs(3)
    out = net(x).detach()
    target = out.clone()
    target[0, [1, 4, 6]] = 1 - (out[0, [1, 4, 6]] > 0.5).float()  # 3 wrong points
    target[1, 2] = 1 - (out[1, 2] > 0.5).float()  # 1 wrong point
    res = threshold_fewshot(net, x, target, [0.0, 0.0], threshold=1e-4, max_steps=7, max_presentations=3)
    assert not res.success.any()
    assert res.shots.tolist() == [9, 3] and res.steps.tolist() == [63, 21]
    assert res.presentations[0, [1, 4, 6]].tolist() == [3, 3, 3] and res.presentations[0].sum() == 9


# ---------------------------------------------------------------------- drawing and the CLI
def test_draw_network_and_cli_write_files(tmp_path):
    from click.testing import CliRunner

    from fewshot.cli import main
    from fewshot.playground.draw import draw_network

    net = BatchedMLP.create(NetConfig((3, 30, 2), "tanh", bias=False), 2, seed=0)
    path = draw_network(net, truth_table_inputs(3)[:3], torch.tensor([[1.0, 0.0]] * 3), tmp_path / "n.png", index=1)
    assert path.stat().st_size > 1000  # wide layers are drawn truncated, two targets circled
    res = CliRunner().invoke(main, ["playground", "draw", "--function", "00010111", "--steps", "200", "--frames", "3", "--out",
                                    str(tmp_path / "draw")])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "draw").iterdir()} >= {"network_start.png", "network_end.png", "history.png",
                                                               "training.gif", "results.md"}
    bad = CliRunner().invoke(main, ["playground", "draw", "--function", "0101", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "8 bits" in bad.output


def test_learnability_levels_are_consistent():
    from fewshot.playground.boolean import learnability

    tables = all_boolean_functions(3)[[0, 0b10010110, 0b11111111]]
    res = learnability(NetConfig((3, 8, 1)), tables, lr=0.5, levels=2, base=400, log_every=100)
    for lv, it in zip(res.level.tolist(), res.iterations.tolist()):
        assert (lv == -1) == (it == -1)
        if lv >= 0:
            assert it <= 400 * 2**lv and (lv == 0 or it > 400 * 2 ** (lv - 1))
    assert bool((res.final_sse[res.learnt] <= 0.25).all()) and bool((res.final_sse[~res.learnt] > 0.25).all())


def test_new_digit_experiment_runs_on_offline_digits():
    from fewshot.playground.digits import NewDigitConfig, load_digit_data, new_digit_experiment

    data = load_digit_data(source="digits", seed=0)
    assert len(data.y_train) + len(data.y_test) == 1797 and data.x_train.shape[1] == 64
    cfg = NewDigitConfig(hidden=32, epochs=3, shots=(2,), repeats=(1, 5), draws=1, retrain_draws=1)
    res = new_digit_experiment(data, cfg, digits=(3, 7), log=lambda _: None)
    methods = [r["method"] for r in res["rows"]]
    assert methods == ["incremental, each example x1", "incremental, each example x5", "incremental + rehearsal, each example x1",
                       "incremental + rehearsal, each example x5", "prototype (hidden layer)", "retrain from scratch"]
    assert all(0 <= r["new"] <= 1 and 0 <= r["old"] <= 1 and r["runs"] == 2 for r in res["rows"])
    inc = {r["method"]: r for r in res["rows"]}
    # reusing the examples more teaches the new digit more and costs more of the old ones
    assert inc["incremental, each example x5"]["new"] >= inc["incremental, each example x1"]["new"]
    assert inc["incremental, each example x5"]["drop"] >= inc["incremental, each example x1"]["drop"]
