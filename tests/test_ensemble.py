"""Ensembles of trained methods (``ScoreEnsemble``, ``fewshot eval RUN_DIR RUN_DIR ...``) and
test-time augmentation of a run (``fewshot eval RUN_DIR --tta``)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from fewshot.cli import main
from fewshot.data import ImageSpec, load_lake_runs, load_omniglot
from fewshot.data.augment import Augmenter, tta_views
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.engine.evaluate import evaluate
from fewshot.methods import MatchingNet, ProtoNet
from fewshot.methods.augmented import AugmentedSupport, TestTimeAugmentation
from fewshot.methods.ensemble import ScoreEnsemble
from fewshot.tasks.episodes import TaskSet, lake_episodes

from conftest import make_blobs_dataset
from fixtures import make_lake_runs, make_omniglot

FAST = ["--device", "cpu", "--threads", "1"]


def members(seed: int = 0) -> list:
    torch.manual_seed(seed)
    def net(dim: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, dim))

    return [ProtoNet(net(8)), ProtoNet(net(8), distance="cosine"), MatchingNet(net(6))]


def test_scores_are_the_sum_of_the_members_log_softmaxes():
    ms = [m.eval() for m in members()]
    x, y, q = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        got = ScoreEnsemble(ms).fit(x, y).scores(q)
        want = sum(torch.log_softmax(m.fit(x, y).scores(q), -1) for m in ms)
    assert got.shape == (5, 3) and torch.allclose(got, want)
    with pytest.raises(TypeError, match="not a registered method"):
        ScoreEnsemble(ms).config()
    with pytest.raises(ValueError, match="at least one"):
        ScoreEnsemble([])


def test_evaluation_over_a_task_set_scores_each_task_as_fit_and_scores_do():
    """The task-set path embeds each item once (every member ``embedding_only``) and must agree with
    fitting each task; an ensemble with a member that is not ``embedding_only`` fits each task."""
    data = make_blobs_dataset(noise=1.5, seed=3)
    tasks = TaskSet.generate(data, 5, 1, 3, tasks=12, seed=0)
    ms = [m.eval() for m in members()]
    assert ScoreEnsemble(ms).embedding_only
    cached = evaluate(ScoreEnsemble(ms), tasks.episodes(data))
    with torch.no_grad():
        hits = [(ScoreEnsemble(ms).fit(ep.support_x, ep.support_y).scores(ep.query_x).argmax(1) == ep.query_y).float().mean()
                for ep in tasks.episodes(data)]
    assert cached.per_task == pytest.approx(torch.stack(hits).tolist())
    mixed = ScoreEnsemble([ms[0], AugmentedSupport(ms[1], Augmenter.photos(), copies=2)])
    assert not mixed.embedding_only and evaluate(mixed, tasks.episodes(data)).tasks == 12


def test_a_single_member_ensemble_predicts_like_the_member():
    data = make_blobs_dataset(noise=1.5, seed=3)
    tasks = TaskSet.generate(data, 5, 1, 3, tasks=12, seed=0)
    proto = members()[0]
    one, alone = evaluate(ScoreEnsemble([proto]), tasks.episodes(data)), evaluate(proto, tasks.episodes(data))
    assert one.per_task == alone.per_task and 0 < one.accuracy < 1


# ----------------------------------------------------------------- fewshot eval RUN_DIR RUN_DIR ...
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Lake-style data and three one-step ProtoNet runs: seeds 0 and 1 at 16 px, seed 0 at 20 px."""
    root = tmp_path_factory.mktemp("ensemble")
    make_omniglot(root / "omniglot", alphabets={"Alpha": 6, "Beta": 6, "Gamma": 5}, drawers=3, zipped=True)
    make_lake_runs(root, runs=2, zipped=True)
    out = {}
    for name, seed, size in (("s0", 0, 16), ("s1", 1, 16), ("big", 0, 20)):
        out[name] = root / name
        invoke(["train", "--method", "protonet", "--data-dir", str(root), "--image-size", str(size), "--way", "5",
                "--shot", "1", "--query", "1", "--episodes", "1", "--val-fraction", "0", "--seed", str(seed), "--quiet",
                "--no-plots", "--out", str(out[name]), *FAST])
    return root, out


def invoke(args: list[str], code: int = 0):
    res = CliRunner().invoke(main, args, env={"XDG_CACHE_HOME": "/tmp/fewshot-test-cache"})
    assert res.exit_code == code, res.output
    assert code == 0 or isinstance(res.exception, SystemExit), res.exception  # an error message, no traceback
    return res


def test_eval_of_several_runs_is_their_ensemble_on_a_task_set_and_on_lakes_runs(runs):
    root, out = runs
    both = [str(out["s0"]), str(out["s1"])]
    tasks = ["--data-dir", str(root), "--image-size", "16", "--way", "5", "--query", "2", "--tasks", "10", "--json", *FAST]
    res = json.loads(invoke(["eval", *both, *tasks]).output)
    assert res["runs"] == both and res["run"] == both[0] and res["method"] == "protonet+protonet" and res["tasks"] == 10
    assert "runs" not in json.loads(invoke(["eval", both[0], *tasks]).output)
    data = load_omniglot("background", data_dir=root, image_size=16)
    taskset = TaskSet.generate(data, 5, 1, 2, 10, seed=0)
    ensemble = ScoreEnsemble([load_checkpoint(r, "best")[0] for r in both])
    assert res["accuracy"] == pytest.approx(evaluate(ensemble, taskset.episodes(data)).accuracy)

    lake = json.loads(invoke(["eval", *both, "--lake-runs", str(root / "all_runs.zip"), "--json", *FAST]).output)
    assert lake["runs"] == both and lake["protocol"] == "lake-20-runs" and lake["trials"] == 40
    want = evaluate(ensemble, lake_episodes(load_lake_runs(root / "all_runs.zip", ImageSpec(16, 1, True))))
    assert lake["error"] == pytest.approx(want.error)


def test_runs_trained_on_other_images_are_refused_by_name(runs):
    root, out = runs
    msg = invoke(["eval", str(out["s0"]), str(out["big"]), "--lake-runs", str(root / "all_runs.zip"), *FAST], code=1).output
    assert str(out["big"]) in msg and "20-px 1-channel" in msg and "16-px 1-channel" in msg and "image size" in msg


def test_eval_tta_averages_each_runs_embeddings_over_the_views(runs):
    root, out = runs
    run = str(out["s0"])
    tasks = ["--data-dir", str(root), "--image-size", "16", "--way", "5", "--query", "2", "--tasks", "10", "--json", *FAST]
    res = json.loads(invoke(["eval", run, *tasks, "--tta", "characters"]).output)
    assert res["tta"] == "characters" and json.loads(invoke(["eval", run, *tasks]).output)["tta"] is None
    data = load_omniglot("background", data_dir=root, image_size=16)
    want = evaluate(TestTimeAugmentation(load_checkpoint(run, "best")[0], tta_views("characters")),
                    TaskSet.generate(data, 5, 1, 2, 10, seed=0).episodes(data))
    assert res["accuracy"] == pytest.approx(want.accuracy)
    lake = json.loads(invoke(["eval", run, str(out["s1"]), "--lake-runs", str(root / "all_runs.zip"), "--tta", "characters",
                              "--json", *FAST]).output)
    assert lake["tta"] == "characters" and lake["trials"] == 40
    assert "--tta applies to a trained RUN_DIR" in invoke(["eval", "--method", "bpl", "--lake-runs", str(root / "all_runs.zip"),
                                                            "--tta", "characters", *FAST], code=2).output


def test_eval_tta_refuses_a_run_that_adapts_on_the_images(runs, tmp_path):
    root, _ = runs
    invoke(["train", "--method", "maml", "--data-dir", str(root), "--image-size", "16", "--way", "5", "--shot", "1", "--query", "1",
            "--episodes", "1", "--val-fraction", "0", "--quiet", "--no-plots", "--out", str(tmp_path / "maml"), *FAST])
    msg = invoke(["eval", str(tmp_path / "maml"), "--lake-runs", str(root / "all_runs.zip"), "--tta", "characters", *FAST], code=2).output
    assert "--tta characters" in msg and "maml" in msg and "AugmentedSupport" in msg
