"""Text few-shot on the user's own files: CSV / JSONL / seq.in+label loaders, ``--train/--test``
evaluation with per-class report and confusions, out-of-scope metrics, ``predict --input``."""

from __future__ import annotations

import json

import numpy as np
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
    preds = json.loads(r.output)["predictions"]
    assert [p["prediction"] for p in preds] == ["intent4", "intent0"]
    assert len(preds[0]["top"]) == 2 and preds[0]["top"][0]["label"] == "intent4"
    r = CliRunner().invoke(main, ["text", "predict", "--support", str(tmp_path / "s.csv"), "--encoder", "hashing"])
    assert r.exit_code != 0 and "--input" in r.output
