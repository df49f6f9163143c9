"""The method contract, checked for every registered method (a new one is covered by listing it
in ``fewshot.methods.registry``), and the coercion of ``-p`` / checkpoint options."""

from __future__ import annotations

import json
import math
from typing import Literal

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import make_blobs_dataset
from fewshot.cli import main
from fewshot.engine.checkpoint import load_checkpoint, method_spec, read_checkpoint_info, save_checkpoint
from fewshot.methods import ALIASES, METHODS, MAML, build_method, canonical_name, coerce_params
from fewshot.methods.params import coerce_value, param_types
from fewshot.nn.backbones import build_backbone
from fewshot.tasks.episodes import EpisodeSampler

DATA = make_blobs_dataset(num_classes=8, per_class=6, size=8)
BACKBONE = ("mlp", {"in_features": 64, "sizes": [16]})
WAY, SHOT, QUERY = 3, 2, 2


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(name: str, **options):
    torch.manual_seed(0)
    return build_method(name, build_backbone(BACKBONE[0], **BACKBONE[1]), **options)


def _scores(method, episode) -> torch.Tensor:
    method.eval()
    with torch.set_grad_enabled(method.fit_needs_grad):
        return method.fit(episode.support_x, episode.support_y).scores(episode.query_x).detach()


def _as_cli_string(value) -> str:
    """How a user would type ``value`` after ``-p KEY=``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name, tmp_path):
    cls = METHODS[name]
    assert cls.name == name and name == name.lower() and name.isidentifier(), "names are snake_case"
    method = _build(name, **cls.test_options)
    method.setup(DATA)
    episode = EpisodeSampler(DATA, WAY, SHOT, QUERY, seed=0).episode(0)
    scores = _scores(method, episode)
    assert scores.shape == (WAY * QUERY, WAY) and torch.isfinite(scores).all()
    proba = method.predict_proba(episode.query_x).detach()
    torch.testing.assert_close(proba.sum(-1), torch.ones(WAY * QUERY))

    save_checkpoint(tmp_path, "last", method, method_spec(method, BACKBONE))
    loaded, info = load_checkpoint(tmp_path, "last")
    assert type(loaded) is cls and info["method"] == name and info["config"] == method.config()
    assert torch.equal(_scores(loaded, episode), scores)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_param_strings_round_trip_through_the_checkpoint(name, tmp_path):
    """-p strings -> coerced options -> config() -> checkpoint JSON -> the same config."""
    method = _build(name, **METHODS[name].test_options)
    method.setup(DATA)
    config = method.config()
    raw = {k: _as_cli_string(v) for k, v in config.items()}
    rebuilt = _build(name, **raw)
    assert rebuilt.config() == config
    save_checkpoint(tmp_path, "last", rebuilt, method_spec(rebuilt, BACKBONE))
    saved = json.loads((tmp_path / "last.json").read_text())
    assert saved["method"] == name and saved["config"] == config
    assert load_checkpoint(tmp_path, "last")[0].config() == config


def test_every_option_is_annotated_and_stored():
    for cls in METHODS.values():
        assert param_types(cls)  # raises on **kwargs or a missing annotation
        assert {"labels", "num_classes", "input_size", "embedding_dim", "feature_channels"}.isdisjoint(param_types(cls))


# ------------------------------------------------------------------------------------ names
def test_old_names_are_aliases():
    for old, new in {"meta-sgd": "meta_sgd", "lstm-meta": "lstm_meta", "discriminative-kshot": "discriminative_kshot",
                     "baseline++": "baseline_pp", "1nn": "one_nn"}.items():
        assert ALIASES[old] == new and canonical_name(old) == new
        assert _build(old).name == new
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from"):
        canonical_name("nope")


def test_checkpoint_of_an_earlier_version_loads(tmp_path):
    """Earlier method names, option names and the ``method_config`` key still load."""
    method = _build("mann", hidden=16, slots=8, width=6, heads=2)
    method.setup(DATA)
    save_checkpoint(tmp_path, "last", method, method_spec(method, BACKBONE))
    info = json.loads((tmp_path / "last.json").read_text())
    config = info.pop("config")
    info["method_config"] = {"labels" if k == "way" else "input_size" if k == "feature_dim" else k: v for k, v in config.items()}
    (tmp_path / "last.json").write_text(json.dumps(info))
    assert load_checkpoint(tmp_path, "last")[0].config() == config

    meta = _build("meta_sgd")
    meta.setup(DATA)
    save_checkpoint(tmp_path, "meta", meta, method_spec(meta, BACKBONE))
    info = read_checkpoint_info(tmp_path, "meta")
    info["method"] = "meta-sgd"
    (tmp_path / "meta.json").write_text(json.dumps(info))
    assert load_checkpoint(tmp_path, "meta")[0].name == "meta_sgd"


def test_hand_edited_checkpoint_value_is_a_clear_error(tmp_path):
    method = _build("maml")
    method.setup(DATA)
    save_checkpoint(tmp_path, "last", method, method_spec(method, BACKBONE))
    info = read_checkpoint_info(tmp_path, "last")
    info["config"]["first_order"] = "maybe"
    (tmp_path / "last.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="first_order='maybe' is not a bool"):
        load_checkpoint(tmp_path, "last")


# ------------------------------------------------------------------------------------ coercion
@pytest.mark.parametrize("text", ["False", "false", "0", "no", "FALSE"])
def test_first_order_false_builds_second_order_maml(text):
    method = build_method("maml", None, first_order=text)
    assert isinstance(method, MAML) and method.first_order is False


@pytest.mark.parametrize("text", ["True", "true", "1", "yes"])
def test_true_strings(text):
    assert build_method("maml", None, first_order=text).first_order is True


def test_bool_options_that_used_to_lie():
    assert build_method("matching", None, fce="False").fce is False
    assert build_method("siamese", build_backbone(*BACKBONE[:1], **BACKBONE[1]), shared="False").shared is False
    with pytest.raises(ValueError, match="fce='maybe' is not a bool"):
        build_method("matching", None, fce="maybe")


def test_wrong_type_and_choice_and_key_are_errors_that_name_the_fix():
    with pytest.raises(ValueError, match=r"k='3.5' is not an int"):
        build_method("knn", None, k="3.5")
    with pytest.raises(ValueError, match=r"k=3.5 is not an int"):
        build_method("knn", None, k=3.5)
    with pytest.raises(ValueError, match="distance='manhattan' is not one of the valid values: 'euclidean', 'cosine'"):
        build_method("knn", None, distance="manhattan")
    with pytest.raises(ValueError, match="unknown option 'kk' for method 'knn'; valid options: k, distance, weights, temperature"):
        build_method("knn", None, kk="3")
    with pytest.raises(ValueError, match="not finite"):
        build_method("knn", None, temperature="nan")
    with pytest.raises(ValueError, match="not finite"):
        build_method("protonet", None, scale=math.inf)
    with pytest.raises(ValueError, match="given twice"):
        build_method("mann", None, way="5", labels="5")


def test_none_and_renamed_options():
    assert build_method("maml", None, test_inner_steps="none").test_inner_steps is None
    assert build_method("maml", None, test_inner_steps="null").test_inner_steps is None
    assert build_method("mann", None, labels="7").way == 7  # earlier name of the option
    assert coerce_params(METHODS["simpleshot"], {"centering": "none"}) == {"centering": "none"}  # a choice, not None


@settings(max_examples=50, deadline=None)
@given(st.integers(-10**12, 10**12))
def test_int_strings_round_trip(n):
    assert coerce_value("n", int, str(n)) == n and coerce_value("n", int, n) == n


@settings(max_examples=50, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_strings_round_trip(x):
    assert coerce_value("x", float, repr(x)) == x


@settings(max_examples=50, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not v.is_integer()))
def test_fractional_values_are_never_truncated_to_int(x):
    with pytest.raises(ValueError, match="is not an int"):
        coerce_value("n", int, x)
    with pytest.raises(ValueError, match="is not an int"):
        coerce_value("n", int, repr(x))


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=8))
def test_bool_accepts_only_its_spellings(text):
    spelled = text.strip().lower()
    if spelled in ("true", "1", "yes", "false", "0", "no"):
        assert coerce_value("b", bool, text) is (spelled in ("true", "1", "yes"))
    else:
        with pytest.raises(ValueError, match="is not a bool"):
            coerce_value("b", bool, text)


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=8))
def test_literal_accepts_only_its_values(text):
    tp = Literal["mse", "ce"]
    if text in ("mse", "ce"):
        assert coerce_value("objective", tp, text) == text
    else:
        with pytest.raises(ValueError, match="valid values: 'mse', 'ce'"):
            coerce_value("objective", tp, text)


def test_tuple_options():
    assert coerce_value("sizes", tuple[int, ...], "64,32") == (64, 32)
    assert coerce_value("sizes", tuple[int, ...], "[64, 32]") == (64, 32)
    assert coerce_value("sizes", tuple[int, ...], [64, 32]) == (64, 32)
    with pytest.raises(ValueError, match=r"sizes\[1\]='x' is not an int"):
        coerce_value("sizes", tuple[int, ...], "64,x")


# ------------------------------------------------------------------------------------ through the CLI
def _train(tmp_path, *args):
    res = CliRunner().invoke(main, ["train", "--threads", "1", "--dataset", "digits", "--shot", "1", "--query", "2", "--episodes", "2",
                                    "--val-fraction", "0", "--device", "cpu", "--quiet", "--no-plots",
                                    "--out", str(tmp_path / "run"), *args])
    assert res.exit_code == 0, res.output
    return read_checkpoint_info(tmp_path / "run", "last")


def test_cli_first_order_false_trains_second_order_maml(tmp_path):
    info = _train(tmp_path, "--method", "maml", "--way", "3", "-p", "first_order=False", "-p", "inner_steps=1")
    assert info["method"] == "maml" and info["config"]["first_order"] is False
    assert load_checkpoint(tmp_path / "run", "last")[0].first_order is False


def test_cli_way_reaches_every_head(tmp_path):
    info = _train(tmp_path, "--method", "mann", "--way", "5", "-p", "hidden=16")
    assert info["config"]["way"] == 5


def test_cli_bad_param_is_a_click_error(tmp_path):
    res = CliRunner().invoke(main, ["train", "--threads", "1", "--method", "knn", "--dataset", "digits", "-p", "k=3.5",
                                    "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "k='3.5' is not an int" in res.output and "Traceback" not in res.output
