"""EMNIST loader on generated fixtures in the official gzip.zip layout."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest

from fewshot.data import load_emnist


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def _write_zip(path, split, labels, mapping, folder="gzip/"):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (len(labels), 28, 28)).astype(np.uint8)
    with zipfile.ZipFile(path, "w") as zf:
        for subset in ("train", "test"):
            zf.writestr(f"{folder}emnist-{split}-{subset}-images-idx3-ubyte.gz", _idx(imgs))
            zf.writestr(f"{folder}emnist-{split}-{subset}-labels-idx1-ubyte.gz", _idx(np.asarray(labels)))
        zf.writestr(f"{folder}emnist-{split}-mapping.txt", "".join(f"{k} {' '.join(map(str, v))}\n" for k, v in mapping.items()))
    return imgs


def test_emnist_digits_and_letters_from_official_layout(tmp_path):
    digits = _write_zip(tmp_path / "gzip.zip", "digits", [3, 0, 9, 3], {i: [48 + i] for i in range(10)})
    ds = load_emnist(tmp_path / "gzip.zip", "digits", "test")
    assert ds.x.shape == (4, 1, 28, 28) and ds.class_names == ["0", "3", "9"]
    assert [ds.class_names[c] for c in ds.y.tolist()] == ["3", "0", "9", "3"]
    np.testing.assert_array_equal(ds.x[0, 0].numpy(), digits[0].T)  # stored transposed, loaded upright
    letters_zip = tmp_path / "letters" / "gzip.zip"
    letters_zip.parent.mkdir()
    _write_zip(letters_zip, "letters", [1, 26, 2], {i: [64 + i, 96 + i] for i in range(1, 27)})
    ds = load_emnist(letters_zip, "letters", "train")
    assert ds.class_names == ["A", "B", "Z"] and ds.info["source"] == "emnist-letters"
    # the unpacked folder works too
    with zipfile.ZipFile(letters_zip) as zf:
        zf.extractall(tmp_path / "unpacked")
    assert load_emnist(tmp_path / "unpacked", "letters", "test").class_names == ["A", "B", "Z"]


def test_emnist_errors_name_the_problem(tmp_path):
    _write_zip(tmp_path / "gzip.zip", "digits", [1, 2], {1: [49], 2: [50]})
    with pytest.raises(FileNotFoundError, match="emnist-letters-test-images"):
        load_emnist(tmp_path / "gzip.zip", "letters")
    with pytest.raises(ValueError, match="unknown EMNIST split"):
        load_emnist(tmp_path / "gzip.zip", "kanji")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_emnist(tmp_path / "nope.zip")
    _write_zip(tmp_path / "bad.zip", "digits", [1, 7], {1: [49]})
    with pytest.raises(ValueError, match="missing from emnist-digits-mapping.txt"):
        load_emnist(tmp_path / "bad.zip")


def test_new_digit_experiment_reads_emnist(tmp_path):
    from fewshot.playground.digits import load_digit_data

    rng = np.random.default_rng(1)
    labels = rng.integers(1, 4, 60)
    _write_zip(tmp_path / "gzip.zip", "letters", labels, {i: [64 + i, 96 + i] for i in range(1, 27)})
    data = load_digit_data(source="emnist-letters", emnist=str(tmp_path / "gzip.zip"))
    assert data.class_names == ("A", "B", "C") and data.num_classes == 3 and data.x_train.shape[1] == 14 * 14
    with pytest.raises(ValueError, match="--emnist"):
        load_digit_data(source="emnist-digits")


def test_new_digit_cli_on_emnist_fixture(tmp_path):
    from click.testing import CliRunner

    from fewshot.cli import main

    rng = np.random.default_rng(2)
    _write_zip(tmp_path / "gzip.zip", "digits", rng.integers(0, 3, 90), {i: [48 + i] for i in range(10)})
    res = CliRunner().invoke(main, ["playground", "new-digit", "--source", "emnist-digits", "--emnist", str(tmp_path / "gzip.zip"),
                                    "--hidden", "8", "--shots", "1", "--points-per-shot", "2", "--repeats", "1", "--draws", "1",
                                    "--retrain-draws", "0", "--epochs", "1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "EMNIST digits" in res.output and "| 2 |" in (tmp_path / "out" / "results.md").read_text()
