"""benchmarks/optimization.py's table labels (no benchmark is run): each method is labelled with the
inner loop it actually trains and evaluates with, read from its config."""

from __future__ import annotations

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("optimization")


def test_each_method_is_labelled_with_the_steps_it_trains_and_evaluates_with(bench):
    for name in bench.METHOD_PARAMS:
        m = bench.build(name, 0)
        label = bench.inner_label(m.config())
        if not hasattr(m, "inner_steps"):  # no inner loop (protonet)
            assert label == "–", name
            continue
        train, test = label.split(",")[0].split("/")
        assert int(train) == m.inner_steps, name
        assert int(test) == (m.inner_steps if m.test_inner_steps is None else m.test_inner_steps), name
    maml = bench.build("maml", 0)
    assert bench.eval_protocol(maml.config()) == f"{maml.test_inner_steps} steps of {maml.test_inner_lr:g}"


def test_the_label_shows_test_rates_that_differ_from_training(bench):
    assert bench.inner_label({"inner_steps": 1, "inner_lr": 0.4, "test_inner_steps": 3, "test_inner_lr": 0.1}) == "1/3, 0.4/0.1"
    assert bench.inner_label({"inner_steps": 3, "inner_lr": 0.1, "test_inner_steps": 20, "test_inner_lr": None}) == "3/20, 0.1"
    assert (bench.inner_label({"inner_steps": 1, "inner_lr": 0.4, "test_inner_steps": 10, "test_lr_scale": 0.25})
            == "1/10, learned from 0.4, test x 0.25")
    assert bench.inner_label({"inner_steps": 5, "test_inner_steps": None}) == "5/5, learned"  # the LSTM meta-learner
    assert bench.inner_label({"inner_steps": 1, "inner_lr": 0.4}) == "1/1, 0.4"  # a cache with params only
    assert bench.eval_protocol({"inner_steps": 3, "inner_lr": 0.1, "test_inner_steps": 20}) == "20 steps of 0.1"


def test_the_maml_diagnostic_evaluates_with_the_step_sizes_it_reports(bench, monkeypatch):
    import fewshot.engine.checkpoint as checkpoint
    from fewshot.engine.evaluate import EvalResult

    from conftest import make_blobs_dataset

    data = make_blobs_dataset(num_classes=5, per_class=10, size=28)
    trained = bench.build("maml", 0)
    trained.setup(data)
    monkeypatch.setattr(checkpoint, "checkpoint_weights", lambda run_dir, tag: trained.state_dict())
    seen = []

    def evaluate(m, episodes):  # what each evaluation adapts with, instead of running it
        seen.append((m.test_inner_steps, m.test_lrs() if m.test_lrs() is not None else m.inner_lr))
        return EvalResult(accuracy=0.5, ci95=0.1, tasks=1, trials=1, error=50.0)

    monkeypatch.setattr(bench, "evaluate", evaluate)
    rows = bench.maml_test_steps("unused", data, n=2)
    assert [(steps, lr) for _, steps, lr, _, _ in rows] == seen
