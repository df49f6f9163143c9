"""Issue 12: every bad input a new user tried gives a clear error (exit code != 0, a message naming
the problem, no traceback), table-driven over the command line; then the Python API cases."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main

from fixtures import glyph, make_omniglot

ENV = {"FEWSHOT_DATA": "", "XDG_CACHE_HOME": "/tmp/fewshot-test-cache"}


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A workspace: tiny Omniglot, a trained image run, a 3-channel run, support folders, text files."""
    root = tmp_path_factory.mktemp("bad")
    make_omniglot(root / "data" / "omniglot", alphabets={"Alpha": 6, "Beta": 6}, drawers=5)
    train = ["train", "--threads", "1", "--dataset", "omniglot", "--data-dir", str(root / "data"), "--way", "4", "--query", "2",
             "--episodes", "2", "--val-fraction", "0", "--quiet", "--device", "cpu"]
    assert CliRunner().invoke(main, train + ["--out", str(root / "run")], env=ENV).exit_code == 0
    rgb = root / "rgb"
    rng = np.random.default_rng(0)
    for c in range(4):
        for i in range(3):
            (rgb / f"c{c}").mkdir(parents=True, exist_ok=True)
            from PIL import Image
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(rgb / f"c{c}" / f"{i}.png")
    res = CliRunner().invoke(main, ["train", "--threads", "1", "--dataset", f"folder:{rgb}", "--image-size", "16", "--way", "3",
                                    "--query", "1", "--episodes", "1", "--val-fraction", "0", "--quiet", "--device",
                                    "cpu", "--out", str(root / "run3")], env=ENV)
    assert res.exit_code == 0, res.output
    tpl = rng.random((105, 105)) < 0.1
    for name in ("ann", "bob"):
        (root / "support" / name).mkdir(parents=True)
        glyph(rng, tpl, jitter=3).save(root / "support" / name / "1.png")
        glyph(rng, tpl, jitter=3).save(root / "support" / name / "2.png")
    glyph(rng, tpl).save(root / "q.png")
    shutil.copytree(root / "support", root / "support_bad")
    (root / "support_bad" / "bob" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    # edited checkpoints
    for name, edit in {"bad_backbone": lambda i: {**i, "backbone": {"name": "resnet999", "kwargs": {}}},
                       "array_config": lambda i: {**i, "config": [1, 2]},
                       "array": lambda i: [i],
                       "no_method": lambda i: {k: v for k, v in i.items() if k != "method"},
                       "backbone_kwargs": lambda i: {**i, "backbone": {"name": "conv4", "kwargs": {"depth": "x"}}}}.items():
        shutil.copytree(root / "run", root / name)
        info = json.loads((root / name / "best.json").read_text())
        (root / name / "best.json").write_text(json.dumps(edit(info)))
    # a zip with a corrupt member
    make_omniglot(root / "zdata" / "omniglot", alphabets={"Alpha": 4}, drawers=3, zipped=True)
    shutil.rmtree(root / "zdata" / "omniglot" / "images_background")
    zpath = root / "zdata" / "omniglot" / "images_background.zip"
    data = bytearray(zpath.read_bytes())
    with zipfile.ZipFile(zpath) as z:
        info = [i for i in z.infolist() if i.filename.endswith(".png")][2]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start:start + 8] = b"\xff" * 8
    zpath.write_bytes(bytes(data))
    root.joinpath("member").write_text(info.filename)
    # text files
    (root / "missing_key.jsonl").write_text('{"text": "hi", "label": "a"}\n{"text": "yo"}\n')
    (root / "ok.csv").write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(10)))
    (root / "text" / "clinc150").mkdir(parents=True)
    (root / "text" / "clinc150" / "data_full.json").write_text(json.dumps({"train": {"a": 1}}))
    (root / "a_file").write_text("not a folder")
    return root


def T(root):
    train = ["train", "--threads", "1", "--dataset", "omniglot", "--data-dir", str(root / "data"), "--way", "4", "--query", "2",
             "--episodes", "2", "--val-fraction", "0", "--quiet", "--out", str(root / "new")]
    # --threads last: the cases below replace ev's run (ev[1]) and pr's support (pr[2:4]) by position
    ev = ["eval", str(root / "run"), "--dataset", "omniglot", "--data-dir", str(root / "data"), "--way", "3", "--query", "2", "--tasks", "2",
          "--threads", "1"]
    pr = ["predict", str(root / "run"), "--support", str(root / "support"), "--query", str(root / "q.png"), "--threads", "1"]
    te = ["text", "eval", "--dataset", f"csv:{root / 'ok.csv'}", "--encoder", "hashing", "--shot", "1"]
    tp = ["text", "predict", "--support", str(root / "ok.csv"), "--query", "hi", "--encoder", "hashing"]
    return {
        # tracebacks before
        "corrupt zip member": (["train", "--threads", "1", "--dataset", "omniglot", "--data-dir", str(root / "zdata"), "--out",
                                str(root / "z"), "--way", "2", "--query", "1", "--episodes", "1"],
                               (root / "member").read_text().split("/")[-1] if (root / "member").exists() else ""),
        "device tpu": (train + ["--device", "tpu"], "unknown device 'tpu'"),
        "device mps": (train + ["--device", "mps"], "MPS is not available"),
        "device cuda:7 (train)": (train + ["--device", "cuda:7"], "cuda:7"),
        "device cuda:7 (eval)": (ev + ["--device", "cuda:7"], "cuda:7"),
        "device cuda:7 (predict)": (pr + ["--device", "cuda:7"], "cuda:7"),
        "device cuda:7 (demo)": (["demo", "--out", str(root / "demo"), "--device", "cuda:7"], "cuda:7"),
        "device cuda:7 (text eval)": (te + ["--device", "cuda:7"], "cuda:7"),
        "device cuda:7 (text predict)": (tp + ["--device", "cuda:7"], "cuda:7"),
        "val-fraction 1": (train[:-6] + ["--val-fraction", "1", "--out", str(root / "new")], "--val-fraction"),
        "tasks-per-step 0": (train + ["--tasks-per-step", "0"], "--tasks-per-step"),
        "val-every 0": (train + ["--val-every", "0"], "--val-every"),
        "checkpoint: wrong backbone": (ev[:1] + [str(root / "bad_backbone")] + ev[2:], "unknown backbone 'resnet999'"),
        "checkpoint: backbone kwargs": (ev[:1] + [str(root / "backbone_kwargs")] + ev[2:], "cannot rebuild"),
        "checkpoint: config array": (ev[:1] + [str(root / "array_config")] + ev[2:], "config is a list"),
        "checkpoint: JSON array": (ev[:1] + [str(root / "array")] + ev[2:], "not a fewshot checkpoint"),
        "checkpoint: no method": (ev[:1] + [str(root / "no_method")] + ev[2:], "not a fewshot checkpoint"),
        "3-channel model, 1-channel data": (["eval", "--threads", "1", str(root / "run3"), "--dataset", "omniglot", "--data-dir",
                                             str(root / "data"), "--way", "3", "--tasks", "2"], "3-channel"),
        "CLINC150 of the wrong shape": (["text", "eval", "--dataset", "clinc150", "--data-dir", str(root),
                                         "--encoder", "hashing"], "data_full.json"),
        "JSONL line missing its key": (["text", "eval", "--dataset", f"jsonl:{root / 'missing_key.jsonl'}",
                                        "--encoder", "hashing"], "line 2: the label"),
        "unwritable --task-file": (ev + ["--task-file", str(root / "a_file" / "tasks.json")], "--task-file"),
        "unwritable --out": (train[:-2] + ["--out", str(root / "a_file" / "run")], "a_file"),
        # silently accepted or misleading before
        "episodes -5": (train + ["--episodes", "-5"], "--episodes"),
        "image-size 0": (train + ["--image-size", "0"], "--image-size"),
        "image-size 1": (train + ["--image-size", "1"], "--image-size"),
        "query 0": (train + ["--query", "0"], "--query"),
        "-p scale=NaN": (train + ["-p", "scale=NaN"], "scale.*not finite"),
        "way 1": (train + ["--way", "1"], "--way"),
        "val-fraction -0.1": (train + ["--val-fraction", "-0.1"], "--val-fraction"),
        "grad-clip 0": (train + ["--grad-clip", "0"], "--grad-clip"),
        "grad-clip nan": (train + ["--grad-clip", "nan"], "--grad-clip"),
        "lr nan": (train + ["--lr", "nan"], "--lr"),
        "val-tasks -1": (train + ["--val-tasks", "-1"], "--val-tasks"),
        "resume: nothing to resume": (train + ["--resume"], "nothing to resume"),
        "override without resume": (train + ["--override"], "--override only applies with --resume"),
        "augment-per class without --augment": (train + ["--augment-per", "class"], r"\(--augment-per class\) needs an augmentation preset"),
        "augment-per class, mini-batch method": (train[:1] + ["--method", "baseline"] + train[1:]
                                                 + ["--augment", "characters", "--augment-per", "class"], "mini-batch"),
        "threshold 5 (probability)": (pr + ["--reject-by", "probability", "--threshold", "5"], "--threshold"),
        "threshold nan": (pr + ["--threshold", "nan"], "--threshold"),
        "text threshold 5": (tp + ["--threshold", "5"], "--threshold"),
        "text seeds 0": (te + ["--seeds", "0"], "--seeds"),
        "text max-drop -5": (te + ["--max-drop", "-5"], "--max-drop"),
        "text batch-size 0": (te + ["--batch-size", "0"], "--batch-size"),
        "text test-per-class 0": (te + ["--test-per-class", "0"], "--test-per-class"),
        "one bad image in a folder": (pr[:2] + ["--support", str(root / "support_bad")] + pr[4:], "3.png.*--skip-bad"),
        "eval way 1": (ev + ["--way", "1"], "--way"),
        "eval tasks 0": (ev + ["--tasks", "0"], "--tasks"),
        "plateau without validation": (train + ["--schedule", "plateau"], "plateau schedule.*no validation"),
        "plateau factor 1": (train + ["--schedule", "plateau", "--plateau-factor", "1"], "--plateau-factor"),
        "plateau factor 0": (train + ["--schedule", "plateau", "--plateau-factor", "0"], "--plateau-factor"),
        "plateau factor nan": (train + ["--schedule", "plateau", "--plateau-factor", "nan"], "--plateau-factor"),
        "plateau patience -1": (train + ["--schedule", "plateau", "--plateau-patience", "-1"], "--plateau-patience"),
        "plateau factor, other schedule": (train + ["--plateau-factor", "0.5"], "apply to --schedule plateau"),
        "dropout 1": (train + ["--dropout", "1"], "--dropout"),
        "dropout, mlp backbone": (train + ["--backbone", "mlp", "--dropout", "0.1"], "--dropout applies to the conv4"),
        "width 0": (train + ["--width", "0"], "--width"),
        "width, mlp backbone": (train + ["--backbone", "mlp", "--width", "128"],
                                "--width applies to the conv4 and relation_conv4 backbones, but this run's backbone is mlp; "
                                "drop --width or pass --backbone conv4"),
        "width, no backbone (knn)": (train + ["--method", "knn", "--width", "128"], "backbone is none; drop --width"),
        "eval --backbone --invert (task set)": (["eval", "--threads", "1", "--backbone", "efficientnet_lite0", "--dataset", f"folder:{root / 'rgb'}",
                                                 "--way", "3", "--query", "1", "--tasks", "2", "--invert"],
                                                "--invert/--no-invert apply to a trained RUN_DIR.*drop the flag"),
        "eval --backbone --no-invert (task set)": (["eval", "--threads", "1", "--backbone", "efficientnet_lite0", "--dataset", f"folder:{root / 'rgb'}",
                                                    "--way", "3", "--query", "1", "--tasks", "2", "--no-invert"],
                                                   "--invert/--no-invert apply to a trained RUN_DIR.*drop the flag"),
        "eval --backbone --invert (Lake's runs)": (["eval", "--threads", "1", "--backbone", "efficientnet_lite0", "--lake-runs", str(root / "support"),
                                                   "--invert"], "--invert/--no-invert apply to a trained RUN_DIR"),
        "eval --backbone --skip-bad": (["eval", "--threads", "1", "--backbone", "efficientnet_lite0", "--dataset", f"folder:{root / 'rgb'}",
                                        "--way", "3", "--query", "1", "--tasks", "2", "--skip-bad"],
                                       "--skip-bad applies to a trained RUN_DIR.*not to --backbone"),
        "dropout, relation_conv4": (train + ["--method", "relation", "--dropout", "0.1"],
                                    "--dropout applies to the conv4 backbone, but this run's backbone is relation_conv4"),
    }


CASES = list(T(__import__("pathlib").Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_bad_cli_input_is_a_clear_error(w, case):
    if case.startswith("device cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    args, message = T(w)[case]
    res = CliRunner().invoke(main, args, env=ENV)
    out = res.output + (str(res.exception) if res.exception and not isinstance(res.exception, SystemExit) else "")
    assert res.exit_code != 0, out
    assert "Traceback" not in out and isinstance(res.exception, SystemExit), repr(res.exception)
    assert __import__("re").search(message, res.output), res.output


def test_predict_output_stays_one_line_per_query_with_odd_class_names(w, tmp_path):
    shutil.copytree(w / "support", tmp_path / "s")
    (tmp_path / "s" / "bob").rename(tmp_path / "s" / "bob\tthe\nbuilder")
    res = CliRunner().invoke(main, ["predict", "--threads", "1", str(w / "run"), "--support", str(tmp_path / "s"), "--query",
                                    str(w / "q.png"), str(w / "q.png"), "--device", "cpu"], env=ENV)
    assert res.exit_code == 0, res.output
    lines = res.output.strip("\n").split("\n")
    assert len(lines) == 2 and all(len(line.split("\t")) == 3 for line in lines)


def test_skip_bad_skips_and_counts(w):
    res = CliRunner().invoke(main, ["predict", "--threads", "1", str(w / "run"), "--support", str(w / "support_bad"),
                                                    "--query", str(w / "q.png"), "--skip-bad", "--device", "cpu"], env=ENV)
    assert res.exit_code == 0 and "skipped 1 file(s)" in res.stderr and "3.png" in res.stderr


# ---------------------------------------------------------------- the Python API
@pytest.fixture
def proto():
    from fewshot.methods import ProtoNet
    from fewshot.nn.backbones import build_backbone

    torch.manual_seed(0)
    return ProtoNet(build_backbone("mlp", in_features=16, sizes=[8])).eval()


def test_labels_as_a_list_or_numpy_array_are_accepted(proto):
    x = torch.rand(4, 1, 4, 4)
    ref = proto.fit(x, torch.tensor([0, 1, 0, 1])).scores(x)
    assert torch.equal(proto.fit(x, [0, 1, 0, 1]).scores(x), ref)
    assert torch.equal(proto.fit(x.numpy(), np.array([0, 1, 0, 1], np.int32)).scores(x.numpy()), ref)


@pytest.mark.parametrize("labels, message", [
    (["cat", "dog", "cat", "dog"], "integer class indices.*np.unique"),
    (np.array([0.0, 1.0, 0.0, 1.0]), "integer class indices"),
    (torch.tensor([0.0, 1.0, 0.0, 1.0]), "integer class indices"),
    (torch.tensor([0, -1, 0, 1]), "negative labels"),
])
def test_labels_that_are_not_class_indices_are_refused(proto, labels, message):
    with pytest.raises(ValueError, match=message):
        proto.fit(torch.rand(4, 1, 4, 4), labels)


def test_float64_is_converted_and_uint8_images_are_scaled_from_0_255(proto):
    x = torch.rand(4, 1, 4, 4)
    ref = proto.fit(x, [0, 1, 0, 1]).scores(x)
    assert torch.allclose(proto.fit(x.double(), [0, 1, 0, 1]).scores(x.double()), ref)
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(proto.fit(u8, [0, 1, 0, 1]).scores(u8), proto.fit(u8.float() / 255, [0, 1, 0, 1]).scores(u8.float() / 255))
    with pytest.raises(ValueError, match="dtype torch.int64"):
        proto.fit(x.long(), [0, 1, 0, 1])


def test_a_query_without_its_batch_dimension_and_nan_queries_are_refused(proto):
    x = torch.rand(4, 1, 4, 4)
    proto.fit(x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"without the batch dimension.*query_x\[None\]"):
        proto.predict(x[0])
    bad = x.clone()
    bad[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"query_x holds NaN.*items \[2\]"):
        proto.predict(bad)
    with pytest.raises(ValueError, match="support_x holds NaN"):
        proto.fit(bad, [0, 1, 0, 1])
