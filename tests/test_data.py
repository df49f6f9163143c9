"""Specification of the data layer: loaders read the official layouts, fail clearly, cache safely."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from fewshot.data import (HELDOUT_ALPHABETS, LabeledDataset, load_idx_pair, load_image_folder, load_lake_runs,
                          load_omniglot, read_idx, with_rotations)
from fewshot.data.images import ImageSpec
from fewshot.data.omniglot import parse_splits

from conftest import make_blobs_dataset, write_png
from fixtures import make_lake_runs, make_omniglot, write_idx


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)


@pytest.mark.parametrize("zipped", [False, True])
def test_omniglot_reads_official_layout_zipped_or_extracted(tmp_path, zipped):
    make_omniglot(tmp_path, alphabets={"Alpha": 3, "Beta": 4}, drawers=5, zipped=zipped)
    ds = load_omniglot("background", data_dir=tmp_path)
    assert ds.x.shape == (7 * 5, 1, 28, 28) and ds.x.dtype == torch.uint8
    assert ds.num_classes == 7 and ds.group_names == ["Alpha", "Beta"]
    assert ds.groups.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert sorted(ds.item_meta["drawer"][ds.y == 0].tolist()) == [1, 2, 3, 4, 5]
    # ink = 1: the page (most pixels) is dark after inversion
    assert ds.items(torch.arange(len(ds))).mean() < 0.5


def test_omniglot_keeps_105_pixels_on_request_and_selects_alphabets(tmp_path):
    make_omniglot(tmp_path, alphabets={"Alpha": 2, "Beta": 3}, drawers=2)
    ds = load_omniglot("background", data_dir=tmp_path, image_size=105, alphabets=["Beta"])
    assert ds.x.shape[-2:] == (105, 105) and ds.num_classes == 3 and ds.group_names == ["Beta"]
    rest = load_omniglot("background", data_dir=tmp_path, exclude_alphabets=["Beta"])
    assert rest.group_names == ["Alpha"]


def test_omniglot_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    make_omniglot(tmp_path, zipped=True)
    first = load_omniglot("background", data_dir=tmp_path)
    import fewshot.data.omniglot as om

    monkeypatch.setattr(om, "read_omniglot_tree", lambda *a, **k: pytest.fail("decoded twice"))
    second = load_omniglot("background", data_dir=tmp_path)
    assert torch.equal(first.x, second.x) and first.class_names == second.class_names


def test_missing_omniglot_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)images_evaluation\.zip.*github\.com/brendenlake/omniglot.*fewshot data fetch"):
        load_omniglot("evaluation", data_dir=tmp_path)


def test_corrupt_archive_is_named(tmp_path):
    (tmp_path / "images_background.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_omniglot("background", data_dir=tmp_path, cache=False)


def test_archive_without_omniglot_structure_is_rejected(tmp_path):
    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="no Omniglot images"):
        load_omniglot("background", data_dir=tmp_path, cache=False)


def test_unknown_split_lists_the_choices():
    with pytest.raises(ValueError, match="background_small1"):
        parse_splits("train")
    assert parse_splits("background,evaluation") == ["background", "evaluation"]


def test_heldout_alphabets_are_outside_both_minimal_sets():
    minimal = {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert len(HELDOUT_ALPHABETS) == 6 and not minimal & set(HELDOUT_ALPHABETS)


@pytest.mark.parametrize("zipped", [False, True])
def test_lake_runs_parse_labels_from_class_labels_txt(tmp_path, zipped):
    path = make_lake_runs(tmp_path, runs=2, zipped=zipped)
    runs = load_lake_runs(path)
    assert [r.name for r in runs] == ["run01", "run02"]
    for r in runs:
        assert r.support.shape == (20, 1, 28, 28) and r.query.shape == (20, 1, 28, 28)
        assert sorted(r.query_labels.tolist()) == list(range(20))  # a permutation in the fixture
    # in the fixture each test item is pixel-identical to its labelled training image
    for r in runs:
        assert torch.equal(r.query, r.support[r.query_labels])


def test_lake_runs_reject_a_wrong_archive(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="class_labels.txt"):
        load_lake_runs(tmp_path / "x")


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = np.array([3, 1, 3, 0, 1, 1, 3], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, images)), images)
    ds = load_idx_pair(tmp_path / name, write_idx(tmp_path / "labels-idx1-ubyte", labels))
    assert ds.x.shape == (7, 1, 5, 4) and ds.class_names == ["0", "1", "3"] and ds.y.tolist() == [2, 1, 2, 0, 1, 1, 2]


def test_truncated_idx_is_reported(tmp_path):
    p = write_idx(tmp_path / "a-idx3-ubyte", np.zeros((4, 3, 3), np.uint8))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def test_image_folder_one_subfolder_per_class(tmp_path):
    for cls, value in [("cat", 10), ("dog", 200)]:
        for i in range(3):
            write_png(tmp_path / cls / f"{i}.png", np.full((12, 10, 3), value, np.uint8))
    ds = load_image_folder(tmp_path, ImageSpec(size=8, channels=3))
    assert ds.class_names == ["cat", "dog"] and ds.x.shape == (6, 3, 8, 8)
    assert ds.x[ds.y == 1].float().mean() > ds.x[ds.y == 0].float().mean()


def test_dataset_validates_labels_and_maps_arbitrary_labels():
    with pytest.raises(ValueError, match="labels must lie"):
        LabeledDataset(torch.zeros(2, 3), torch.tensor([0, 5]), ["a", "b"])
    ds = LabeledDataset.from_arrays(np.zeros((3, 2)), ["b", "a", "b"])
    assert ds.class_names == ["a", "b"] and ds.y.tolist() == [1, 0, 1]


def test_split_classes_is_disjoint_and_seeded(blobs):
    a, b = blobs.split_classes(0.25, seed=3)
    a2, b2 = blobs.split_classes(0.25, seed=3)
    assert a.class_names == a2.class_names and b.class_names == b2.class_names
    assert not set(a.class_names) & set(b.class_names)
    assert a.num_classes + b.num_classes == blobs.num_classes


def test_rotations_add_three_rotated_copies_of_each_class():
    ds = make_blobs_dataset(num_classes=3, per_class=2)
    rot = with_rotations(ds)
    assert rot.num_classes == 12 and len(rot) == 4 * len(ds)
    assert torch.equal(rot.x[rot.y == 3], torch.rot90(ds.x[ds.y == 0], 1, dims=(-2, -1)))
    assert rot.groups.tolist() == ds.groups.tolist() * 4


def test_real_omniglot_minimal_set(shared_data):
    ds = load_omniglot("background_small1", data_dir=shared_data)
    assert ds.num_classes == 136 and len(ds) == 136 * 20
    assert sorted(ds.group_names) == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
