"""Standard few-shot image layouts, read from fixtures generated in their exact formats."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from fewshot.data.cifar_fewshot import CIFAR_FS_TEST, CIFAR_FS_VAL, FC100_TEST, load_cifar100, load_cifar_fs, load_fc100
from fewshot.data.cub import cub_files
from fewshot.data.images import ImageSpec
from fewshot.data.imagenet_subsets import load_tiered_imagenet_pickles, mini_imagenet_files, tiered_imagenet_files
from fewshot.data.safe_pickle import load_data_pickle


def _png(seed: int, size: int = 12) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_mini_imagenet_ravi_csv(tmp_path):
    (tmp_path / "images").mkdir()
    rows = ["filename,label"]
    for c, wnid in enumerate(["n01532829", "n01558993"]):
        for k in range(3):
            name = f"{wnid}{k + 1:08d}.jpg"
            Image.open(io.BytesIO(_png(c * 10 + k))).save(tmp_path / "images" / name, "JPEG")
            rows.append(f"{name},{wnid}")
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    files = mini_imagenet_files(tmp_path, "test")
    assert files.class_names == ["n01532829", "n01558993"] and files.labels.tolist() == [0, 0, 0, 1, 1, 1]
    ds = files.load(ImageSpec(size=8, channels=3))
    assert ds.x.shape == (6, 3, 8, 8)
    with pytest.raises(FileNotFoundError, match="train.csv"):
        mini_imagenet_files(tmp_path, "train")
    (tmp_path / "val.csv").write_text("file,class\na.jpg,n1\n")
    with pytest.raises(ValueError, match="header"):
        mini_imagenet_files(tmp_path, "val")
    os.remove(tmp_path / "images" / "n0155899300000001.jpg")
    with pytest.raises(FileNotFoundError, match="1 of 6"):
        mini_imagenet_files(tmp_path, "test")


def test_tiered_imagenet_pickles_and_folders(tmp_path):
    pngs = [np.frombuffer(_png(i), dtype=np.uint8) for i in range(4)]
    labels = {"label_specific": np.array([0, 0, 1, 2]), "label_general": np.array([0, 0, 1, 1]),
              "label_specific_str": ["n01", "n02", "n03"], "label_general_str": ["animal", "device"]}
    (tmp_path / "test_images_png.pkl").write_bytes(pickle.dumps(pngs, protocol=2))
    (tmp_path / "test_labels.pkl").write_bytes(pickle.dumps(labels, protocol=2))
    ds = load_tiered_imagenet_pickles(tmp_path, "test", ImageSpec(size=12, channels=3))
    assert ds.x.shape == (4, 3, 12, 12) and ds.class_names == ["n01", "n02", "n03"]
    assert ds.groups.tolist() == [0, 1, 1] and ds.group_names == ["animal", "device"]
    assert np.array_equal(ds.x[0].numpy().transpose(1, 2, 0), np.asarray(Image.open(io.BytesIO(pngs[0].tobytes()))))
    for c in ("n01", "n02"):
        (tmp_path / "val" / c).mkdir(parents=True)
        (tmp_path / "val" / c / "a.png").write_bytes(_png(1))
    files = tiered_imagenet_files(tmp_path, "val")
    assert files.class_names == ["n01", "n02"] and len(files) == 2


#: CIFAR-100's superclasses and their fine classes (the archive lists both alphabetically).
CIFAR100 = {
    "aquatic_mammals": "beaver dolphin otter seal whale", "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip", "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe", "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf", "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk", "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman", "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel", "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train", "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def _cifar_archive(path, n_per_class=2):
    coarse = sorted(CIFAR100)
    fine = sorted(n for names in CIFAR100.values() for n in names.split())
    coarse_of = np.array([next(i for i, c in enumerate(coarse) if f in CIFAR100[c].split()) for f in fine])
    fine_labels = np.repeat(np.arange(100), n_per_class)
    meta = {b"fine_label_names": [n.encode() for n in fine], b"coarse_label_names": [n.encode() for n in coarse]}
    rng = np.random.default_rng(0)

    def batch(labels):
        return {b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"fine_labels": labels.tolist(),
                b"coarse_labels": coarse_of[labels].tolist(), b"filenames": [b"x.png"] * len(labels)}

    with tarfile.open(path, "w:gz") as tar:
        for name, obj in (("meta", meta), ("train", batch(fine_labels)), ("test", batch(fine_labels[::2]))):
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return coarse_of


def test_cifar_fs_and_fc100(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    coarse_of = _cifar_archive(archive)
    full = load_cifar100(archive)
    assert full.x.shape == (300, 3, 32, 32) and full.num_classes == 100 and full.groups.tolist() == coarse_of.tolist()
    splits = {s: load_cifar_fs(archive, s) for s in ("train", "val", "test")}
    assert [splits[s].num_classes for s in ("train", "val", "test")] == [64, 16, 20]
    assert sorted(splits["test"].class_names) == sorted(CIFAR_FS_TEST)
    fc = {s: load_fc100(archive, s) for s in ("train", "val", "test")}
    assert [fc[s].num_classes for s in ("train", "val", "test")] == [60, 20, 20]
    assert set(fc["test"].group_names) == set(FC100_TEST)
    assert sorted(fc["test"].class_names)[:5] == ["baby", "beaver", "bee", "beetle", "boy"]
    assert not set(fc["train"].group_names) & set(fc["test"].group_names)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/fewshot-pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    for proto in (2, 4, 5):
        with pytest.raises(ValueError, match="refusing to unpickle"):
            load_data_pickle(pickle.dumps({b"data": _Exploit()}, protocol=proto))
    with pytest.raises(ValueError, match="refusing"):
        load_data_pickle(pickle.dumps(io.BytesIO(b"x")))
    # A CIFAR archive with a malicious meta file is refused, not executed.
    bad = pickle.dumps({b"fine_label_names": _Exploit()}, protocol=2)
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        for name in ("meta", "train", "test"):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(bad)
            tar.addfile(info, io.BytesIO(bad))
    with pytest.raises(ValueError, match="refusing"):
        load_cifar100(tmp_path / "evil.tar.gz")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_data_pickle(pickle.dumps({b"a": [1, 2, 3]}, protocol=2)[:-5])


def test_cub_layout_and_closer_look_split(tmp_path):
    root = tmp_path / "CUB_200_2011"
    classes, images, labels = [], [], []
    img_id = 0
    for c in range(1, 9):  # 8 classes: train 1,3,5,7 (0-based even); val 2,6; test 4,8
        name = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {name}")
        for k in range(2):
            img_id += 1
            rel = f"{name}/Bird_{c}_{k}.jpg"
            (root / "images" / name).mkdir(parents=True, exist_ok=True)
            Image.open(io.BytesIO(_png(img_id))).save(root / "images" / rel, "JPEG")
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c}")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    test = cub_files(tmp_path, "test")  # the parent folder is accepted too
    assert test.class_names == ["004.Bird_4", "008.Bird_8"] and len(test) == 4
    assert cub_files(root, "train").class_names == ["001.Bird_1", "003.Bird_3", "005.Bird_5", "007.Bird_7"]
    assert cub_files(root, "val").class_names == ["002.Bird_2", "006.Bird_6"]
    (root / "image_class_labels.txt").write_text("1 1\n")
    with pytest.raises(ValueError, match="different image ids"):
        cub_files(root, "test")
