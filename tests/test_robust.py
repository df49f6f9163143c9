"""Issue 12: nothing lost, nothing silently wrong (data loss, torn checkpoints, locks, resume)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.engine.checkpoint import load_checkpoint


def cli(args, env=None):
    return CliRunner().invoke(main, args, env={"FEWSHOT_DATA": "", "XDG_CACHE_HOME": "/tmp/fewshot-test-cache", **(env or {})})


# ---------------------------------------------------------------- 1. demo --out never deletes what it did not create
def test_demo_refuses_a_foreign_non_empty_folder_and_keeps_other_files(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    res = cli(["demo", "--out", str(tmp_path), "--episodes", "2", "--tasks", "2", "--device", "cpu"])
    assert res.exit_code != 0 and "not empty" in res.output and "Traceback" not in res.output
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--episodes", "2", "--tasks", "2", "--device", "cpu"]
    assert cli(args).exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert cli(args).exit_code == 0  # a second demo into its own folder replaces only its own files
    assert (out / "notes.txt").read_text() == "mine" and (out / "results.json").exists()


# ---------------------------------------------------------------- 2. checkpoints are atomic as a whole
class Killed(BaseException):
    """The process dies here (BaseException: nothing in the code under test may catch it)."""


def crash_at(monkeypatch, k):
    """Make the k-th filesystem step of checkpoint writing die: a write leaves half a file behind."""
    from fewshot.engine import checkpoint as ck

    calls = []
    for name in ("_write_tensors", "_write_text", "_replace", "_remove"):
        real = getattr(ck, name)

        def step(*args, _real=real, _name=name):
            calls.append(_name)
            if len(calls) == k:
                if _name in ("_write_tensors", "_write_text"):
                    path = args[1] if _name == "_write_tensors" else args[0]
                    path.write_bytes(b"{\"half\": ")  # torn write
                raise Killed(f"killed in {_name}")
            return _real(*args)

        monkeypatch.setattr(ck, name, step)
    return calls


@pytest.mark.parametrize("schedule", [{"val_every": 5}, {"val_every": 2, "schedule": "plateau", "plateau_patience": 0}])
def test_a_kill_at_every_point_of_every_checkpoint_write_resumes_bit_identically(tmp_path, monkeypatch, schedule):
    from test_train import make_trainer, params

    full = make_trainer(tmp_path / "full", steps=10, **schedule)
    full_log = full.fit()
    if "schedule" in schedule:  # lowered twice (validations 6 and 8): the schedule's state matters on resume
        assert full_log[-1]["lr"] == 1e-3 / 4
    k, seen = 0, set()
    while True:
        k += 1
        out = tmp_path / f"kill{k}"
        with monkeypatch.context() as m:
            calls = crash_at(m, k)
            try:
                make_trainer(out, steps=10, **schedule).fit()
            except Killed:
                pass
            else:
                break  # k is past the last filesystem step of the run
        seen.add(calls[-1])
        resumed = make_trainer(out, steps=10, **schedule)
        log = resumed.fit(resume=(out / "last.json").exists())
        assert torch.equal(params(resumed.method), params(full.method)), f"kill at step {k} ({calls[-1]})"
        for name in ("best", "last"):
            method, info = load_checkpoint(out, name)
            assert info["state"]["step"] == 10 if name == "last" else True
        assert [(r["step"], r.get("loss"), r.get("lr")) for r in log] == [(r["step"], r.get("loss"), r.get("lr")) for r in full_log]
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert seen == {"_write_tensors", "_write_text", "_replace", "_remove"} and k > 10


def test_a_torn_checkpoint_is_refused_loudly(tmp_path):
    from test_train import make_trainer

    make_trainer(tmp_path, steps=10).fit()
    info = json.loads((tmp_path / "last.json").read_text())
    best = json.loads((tmp_path / "best.json").read_text())
    info["files"]["weights"] = best["files"]["weights"]  # weights of another save
    (tmp_path / "last.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="torn checkpoint"):
        load_checkpoint(tmp_path, "last")
    with pytest.raises(ValueError, match="torn checkpoint"):
        make_trainer(tmp_path, steps=10).fit(resume=True)


# ---------------------------------------------------------------- 4. a diverged run is not saved as a success
def test_non_finite_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path):
    from test_train import make_trainer

    t = make_trainer(tmp_path, steps=20, val_every=5)
    real_step, calls = t.method.training_step, []

    def diverges_at_step_10(batch):
        calls.append(1)
        out = real_step(batch)
        if len(calls) == 10:
            with torch.no_grad():
                next(t.method.parameters()).fill_(float("inf"))  # e.g. --lr 1e9; the loss itself stays finite
        return out

    t.method.training_step = diverges_at_step_10
    with pytest.raises(FloatingPointError, match="diverged.*learning rate"):
        t.fit()
    method, info = load_checkpoint(tmp_path, "last")
    assert info["state"]["step"] == 5 and all(torch.isfinite(v).all() for v in method.state_dict().values())


# ---------------------------------------------------------------- 9. loaded models are in eval mode
def test_a_loaded_model_is_in_eval_mode_and_fitting_leaves_batchnorm_statistics_alone(tmp_path):
    from fewshot.engine.checkpoint import method_spec, save_checkpoint
    from fewshot.methods import build_method
    from fewshot.nn.backbones import backbone_spec_for, build_backbone

    spec = backbone_spec_for("conv4", (1, 28, 28))
    torch.manual_seed(0)
    save_checkpoint(tmp_path, "best", build_method("protonet", build_backbone(spec[0], **spec[1])), method_spec(
        build_method("protonet", build_backbone(spec[0], **spec[1])), spec))
    method, _ = load_checkpoint(tmp_path, "best")
    assert not method.training
    stats = {k: v.clone() for k, v in method.state_dict().items() if "running" in k or "num_batches" in k}
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        method.fit(x[:4], torch.tensor([0, 1, 2, 3]))
        together = method.scores(x[4:])
        alone = torch.cat([method.scores(x[i:i + 1]) for i in range(4, 8)])
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in stats.items())
    assert torch.allclose(together, alone, atol=1e-5)  # a query's answer does not depend on its batch


# ---------------------------------------------------------------- 3. one writer per run directory
def test_a_second_training_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    from test_train import make_trainer

    first = make_trainer(tmp_path, steps=5)
    with first.run.lock():  # the first training is running
        with pytest.raises(FileExistsError, match=f"pid {__import__('os').getpid()}.*another --out"):
            make_trainer(tmp_path, steps=5).fit()
        assert not (tmp_path / "last.json").exists()
    make_trainer(tmp_path, steps=5).fit()  # free again once the first one ends


# ---------------------------------------------------------------- resume
def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    from test_train import make_trainer

    with pytest.raises(FileNotFoundError, match="nothing to resume.*drop --resume"):
        make_trainer(tmp_path, steps=5).fit(resume=True)


def test_resume_refuses_changed_settings_unless_overridden_and_records_the_change(tmp_path):
    from test_train import make_trainer

    make_trainer(tmp_path, steps=10).fit()
    for change in ({"lr": 0.5}, {"way": 3}, {"steps": 20}, {"optimizer": "sgd"}):
        with pytest.raises(ValueError, match=f"other settings.*train_config.{next(iter(change))}.*--override"):
            make_trainer(tmp_path, steps=change.pop("steps", 10), **change).fit(resume=True)
    with pytest.raises(ValueError, match="method and backbone.*cannot change"):
        make_trainer(tmp_path, steps=10, method="knn").fit(resume=True)
    make_trainer(tmp_path, steps=15, optimizer="sgd").fit(resume=True, override=True)  # fresh SGD state
    info = json.loads((tmp_path / "last.json").read_text())
    assert info["state"]["step"] == 15 and info["train_config"]["optimizer"] == "sgd"
    assert info["state"]["overrides"] == [{"step": 10, "changes": {"train_config.optimizer": ["adam", "sgd"],
                                                                    "train_config.steps": [10, 15]}}]


def test_a_missing_or_truncated_optimiser_file_is_a_clear_error(tmp_path):
    from test_train import make_trainer

    make_trainer(tmp_path, steps=10).fit()
    optim = tmp_path / json.loads((tmp_path / "last.json").read_text())["files"]["optimizer"]
    optim.write_bytes(optim.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        make_trainer(tmp_path, steps=10).fit(resume=True)
    optim.unlink()
    with pytest.raises(ValueError, match="optimizer file .* is missing"):
        make_trainer(tmp_path, steps=10).fit(resume=True)


def test_resumed_logs_continue_exactly_from_a_checkpoint_between_log_lines(tmp_path):
    from test_train import make_trainer

    full = make_trainer(tmp_path / "full", steps=12, log_every=4, checkpoint_every=3, val_tasks=0).fit()
    part = make_trainer(tmp_path / "part", steps=12, log_every=4, checkpoint_every=3, val_tasks=0)
    real, calls = part.method.training_step, []

    def dies_at_step_11(batch):
        calls.append(1)
        if len(calls) == 11:
            raise KeyboardInterrupt  # last checkpoint: step 9, the log window holds step 9 only
        return real(batch)

    part.method.training_step = dies_at_step_11
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    resumed = make_trainer(tmp_path / "part", steps=12, log_every=4, checkpoint_every=3, val_tasks=0).fit(resume=True)
    assert [(r["step"], r["loss"], r["accuracy"]) for r in resumed] == [(r["step"], r["loss"], r["accuracy"]) for r in full]


def test_checkpoints_are_written_by_time_when_no_step_interval_is_given(tmp_path, monkeypatch):
    from fewshot.engine import trainer as tr
    from test_train import make_trainer

    clock = iter(range(0, 10_000, 25))  # 25 s per call of the clock
    monkeypatch.setattr(tr.time, "monotonic", lambda: next(clock))
    saved = []
    t = make_trainer(tmp_path, steps=9, checkpoint_every=None, checkpoint_seconds=60, val_tasks=0)
    real = t.run.save
    t.run.save = lambda tag, *a, **k: (saved.append((tag, a[2])), real(tag, *a, **k))
    t.fit()
    assert [s for tag, s in saved if tag == "last"] == [3, 6, 9]


# ---------------------------------------------------------------- 6. every PIL mode converts correctly
def test_16_bit_images_are_rescaled_and_alpha_only_ink_stays_visible(tmp_path):
    import numpy as np
    from PIL import Image

    from fewshot.data import ImageSpec, decode_image

    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")  # a 0..65535 gradient
    grey = decode_image(tmp_path / "ramp16.png", ImageSpec(size=64, channels=1))[0]
    assert grey[0, 0] == 0 and grey[0, -1] == 255 and abs(float(grey.mean()) - 127.5) < 2
    ink = np.zeros((32, 32, 4), np.uint8)
    ink[8:24, 14:18, 3] = 255  # black strokes drawn only in the alpha channel, on a transparent page
    Image.fromarray(ink, "RGBA").save(tmp_path / "ink.png")
    page = decode_image(tmp_path / "ink.png", ImageSpec(size=32, channels=1))[0]
    assert page[0, 0] == 255 and page[16, 15] == 0  # dark ink on a white page
    white_ink = ink.copy()
    white_ink[..., :3] = 255
    Image.fromarray(white_ink, "RGBA").save(tmp_path / "white.png")
    page = decode_image(tmp_path / "white.png", ImageSpec(size=32, channels=1))[0]
    assert page[0, 0] == 0 and page[16, 15] == 255  # light ink: composited on black


# ---------------------------------------------------------------- 8. folders of any format, decided by content
def test_a_class_per_folder_dataset_accepts_every_format_pillow_reads_and_reports_skips(tmp_path):
    import numpy as np
    from PIL import Image

    from fewshot.data import ImageSpec, load_image_folder

    rng = np.random.default_rng(0)
    for s, fmt in enumerate(["PPM", "BMP", "TIFF", "GIF", "WEBP"]):
        for i in range(2):
            (tmp_path / f"s{s + 1}").mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (12, 10), np.uint8)).save(tmp_path / f"s{s + 1}" / f"{i + 1}.pgm", "PPM")
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), np.uint8)).save(tmp_path / f"s{s + 1}" / f"x{i}", fmt)
    (tmp_path / "s1" / "README.txt").write_text("faces of subject 1")
    ds = load_image_folder(tmp_path, ImageSpec(size=8, channels=1))
    assert ds.num_classes == 5 and len(ds) == 20
    assert ds.info["skipped_count"] == 1 and "README.txt: not an image" in ds.info["skipped"][0]
    (tmp_path / "s2" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a corrupt image
    with pytest.raises(ValueError, match="3.png.*--skip-bad"):
        load_image_folder(tmp_path, ImageSpec(size=8, channels=1))
    ds = load_image_folder(tmp_path, ImageSpec(size=8, channels=1), skip_bad=True)
    assert len(ds) == 20 and ds.info["skipped_count"] == 2


def test_a_corrupt_member_of_an_archive_is_named(tmp_path):
    import zipfile

    from fewshot.data import load_omniglot
    from fixtures import make_omniglot

    import shutil

    make_omniglot(tmp_path / "omniglot", zipped=True)
    shutil.rmtree(tmp_path / "omniglot" / "images_background")  # only the archive
    zpath = next((tmp_path / "omniglot").glob("*.zip"))
    data = bytearray(zpath.read_bytes())
    with zipfile.ZipFile(zpath) as z:
        info = [i for i in z.infolist() if i.filename.endswith(".png")][3]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start:start + info.compress_size] = bytes(info.compress_size)  # zero the member's data
    zpath.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=info.filename.split("/")[-1]):
        load_omniglot("background", data_dir=tmp_path, cache=False)


# ---------------------------------------------------------------- 5. one preprocessing path for train, eval and predict
@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A ProtoNet trained briefly on a tiny Omniglot (dark ink on white pages, inverted by the loader)."""
    from fixtures import make_omniglot

    root = tmp_path_factory.mktemp("robust")
    make_omniglot(root / "data" / "omniglot", alphabets={"Alpha": 6, "Beta": 6}, drawers=5)
    res = cli(["train", "--threads", "1", "--dataset", "omniglot", "--data-dir", str(root / "data"), "--way", "4", "--shot", "1",
               "--query", "2", "--episodes", "4", "--val-fraction", "0", "--out", str(root / "run"), "--quiet",
               "--device", "cpu"])
    assert res.exit_code == 0, res.output
    return root


def test_eval_on_a_folder_decodes_like_training_and_refuses_negatives(image_run, tmp_path):
    import shutil

    import numpy as np
    from PIL import Image

    pages = image_run / "data" / "omniglot" / "images_background" / "Alpha"
    common = ["--way", "3", "--shot", "1", "--query", "2", "--tasks", "10", "--seed", "0", "--json", "--device", "cpu"]
    by_loader = cli(["eval", "--threads", "1", str(image_run / "run"), "--dataset", "omniglot", "--data-dir", str(image_run / "data"),
                     "--alphabets", "Alpha", *common])
    by_folder = cli(["eval", "--threads", "1", str(image_run / "run"), "--dataset", f"folder:{pages}", *common])
    assert by_loader.exit_code == 0 and by_folder.exit_code == 0, by_folder.output
    assert json.loads(by_folder.output)["accuracy"] == json.loads(by_loader.output)["accuracy"]
    negatives = tmp_path / "negatives"
    shutil.copytree(pages, negatives)
    for p in negatives.rglob("*.png"):  # light strokes on a dark page, like raw MNIST
        Image.fromarray(255 - np.asarray(Image.open(p).convert("L"))).save(p)
    res = cli(["eval", "--threads", "1", str(image_run / "run"), "--dataset", f"folder:{negatives}", *common])
    assert res.exit_code != 0 and "negatives" in res.output and "--no-invert" in res.output and "Traceback" not in res.output
    assert cli(["eval", "--threads", "1", str(image_run / "run"), "--dataset", f"folder:{negatives}", "--no-invert", *common]).exit_code == 0


# ---------------------------------------------------------------- open-set rejection in predict
def test_predict_rejects_blank_pages_and_noise_by_distance_even_with_one_class(image_run, tmp_path):
    import numpy as np
    from PIL import Image

    from fixtures import glyph

    rng = np.random.default_rng(1)
    template = rng.random((105, 105)) < 0.08
    (tmp_path / "support" / "ann").mkdir(parents=True)
    for i in range(3):
        glyph(rng, template, jitter=2).save(tmp_path / "support" / "ann" / f"{i}.png")
    glyph(rng, template, jitter=2).save(tmp_path / "known.png")
    Image.fromarray(np.full((105, 105), 255, np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(rng.integers(0, 256, (105, 105), dtype=np.uint8)).save(tmp_path / "noise.png")
    queries = [str(tmp_path / f) for f in ("known.png", "blank.png", "noise.png")]
    args = ["predict", "--threads", "1", str(image_run / "run"), "--support", str(tmp_path / "support"), "--device", "cpu", "--json"]
    res = cli(args + ["--query", *queries, "--reject-by", "probability", "--threshold", "0.99"])
    assert [p["probability"] for p in json.loads(res.output)["predictions"]] == [1.0, 1.0, 1.0]  # useless with one class
    res = cli(args + ["--query", *queries, "--threshold", "2"])  # several files after one --query
    assert res.exit_code == 0, res.output
    assert [p["prediction"] for p in json.loads(res.output)["predictions"]] == ["ann", "unknown", "unknown"]
    (tmp_path / "support" / "unknown").mkdir()
    glyph(rng, ~template, jitter=2).save(tmp_path / "support" / "unknown" / "0.png")
    res = cli(args + ["--query", queries[0], "--threshold", "2"])
    assert res.exit_code != 0 and "rejection label" in res.output and "--unknown-label" in res.output
    res = cli(args + ["--query", queries[0], "--threshold", "2", "--unknown-label", "none of them"])
    assert json.loads(res.output)["predictions"][0]["prediction"] == "ann"


# ---------------------------------------------------------------- 7. text files: labels, BOM, line numbers
@pytest.mark.parametrize("content, suffix, message", [
    ('{"text": "hi", "label": "greet"}\n{"text": "yo"}\n', ".jsonl", r"line 2: the label \('label'\) is missing"),
    ('{"text": "hi", "label": "greet"}\n{"text": "yo", "label": null}\n', ".jsonl", "line 2: the label.*empty"),
    ('{"text": "hi", "label": "greet"}\n{"text": "yo", "label": ["a", "b"]}\n', ".jsonl", "line 2: the label.*a list"),
    ('{"text": "hi", "label": "greet"}\n{"text": "yo", "label": ', ".jsonl", "line 2: not valid JSON"),
    ('{"text": "hi", "label": "greet"}\n[1, 2]\n', ".jsonl", "line 2: a JSON list"),
    ("text,label\nhi,greet\nyo,\n", ".csv", "line 3: the label.*empty"),
    ("text,label\nhi,greet\nyo\n", ".csv", "line 3: the label.*empty"),
])
def test_text_rows_without_a_usable_label_are_refused_with_file_and_line(tmp_path, content, suffix, message):
    from fewshot.text.data import read_table

    path = tmp_path / f"data{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_table(path)
    assert str(path) in str(err.value)


def test_a_utf8_bom_does_not_hide_the_first_column(tmp_path):
    from fewshot.text.data import read_table

    (tmp_path / "bom.csv").write_bytes("text,label\nhi,greet\nbye,leave\n".encode("utf-8-sig"))
    assert read_table(tmp_path / "bom.csv") == (["hi", "bye"], ["greet", "leave"])
    (tmp_path / "bom.jsonl").write_bytes('{"text": "hi", "label": 3}\n'.encode("utf-8-sig"))
    assert read_table(tmp_path / "bom.jsonl") == (["hi"], ["3"])


def test_a_corrupt_image_inside_omniglot_is_named(tmp_path):
    from fewshot.data import load_omniglot
    from fixtures import make_omniglot

    make_omniglot(tmp_path / "omniglot")
    bad = sorted((tmp_path / "omniglot").rglob("*.png"))[4]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    with pytest.raises(ValueError, match=bad.name):
        load_omniglot("background", data_dir=tmp_path, cache=False)


def test_eval_of_a_method_without_a_run_decodes_a_folder_with_invert(tmp_path, monkeypatch):
    """No run records a decoding for ``--method``: ``--invert`` chooses it (it was dropped there)."""
    import numpy as np

    import fewshot.data
    from conftest import write_png

    rng = np.random.default_rng(0)
    for c in range(3):
        for i in range(3):
            write_png(tmp_path / "pics" / f"c{c}" / f"{i}.png", rng.integers(0, 80, (16, 16), np.uint8))
    real, specs = fewshot.data.load_image_folder, []
    monkeypatch.setattr(fewshot.data, "load_image_folder", lambda root, spec, **kw: (specs.append(spec), real(root, spec, **kw))[1])
    args = ["eval", "--threads", "1", "--method", "knn", "--dataset", f"folder:{tmp_path / 'pics'}", "--image-size", "16", "--way", "2",
            "--query", "1", "--tasks", "2", "--device", "cpu", "--json"]
    for flag, inverted in ((["--invert"], True), (["--no-invert"], False), ([], False)):
        res = cli(args + flag)
        assert res.exit_code == 0, res.output
        assert specs[-1].invert is inverted and specs[-1].size == 16
