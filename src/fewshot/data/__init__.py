"""Labelled data in memory: every loader returns a :class:`LabeledDataset`."""

from .dataset import LabeledDataset, concat_datasets, with_rotations
from .emnist import EMNIST_SPLITS, load_emnist
from .idx import load_idx_pair, load_mnist, parse_idx, read_idx
from .images import ImageSpec, decode_image, load_image_folder
from .lake import LakeRun, load_lake_runs
from .omniglot import HELDOUT_ALPHABETS, load_omniglot
from .toy import load_digits_images

__all__ = [
    "EMNIST_SPLITS", "HELDOUT_ALPHABETS", "ImageSpec", "LabeledDataset", "LakeRun", "concat_datasets", "decode_image",
    "load_digits_images", "load_emnist", "load_idx_pair", "load_image_folder", "load_lake_runs", "load_mnist",
    "load_omniglot", "parse_idx", "read_idx", "with_rotations",
]
