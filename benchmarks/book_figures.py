"""Figures of the books' exercises that need no training: the 20 drawers of one Omniglot
character, and support-set augmentation before/after on Omniglot characters and on a photo-like
image (an MPEG-7 silhouette). Writes docs/img/tutorials/*.png.

    python benchmarks/book_figures.py [--character 0] [--copies 7]

Data: $FEWSHOT_DATA or ../shared/data (omniglot/images_background_small1.zip, images/mpeg7/).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "img" / "tutorials"


def grid(images: torch.Tensor, titles: list[str], path: Path, cols: int, title: str, cmap: str = "gray_r") -> Path:
    """``images [N, C, H, W]`` in [0, 1] as a grid of panels."""
    from fewshot.utils import subplots

    rows = (len(images) + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        img = img.clamp(0, 1)
        ax.imshow(img[0] if img.shape[0] == 1 else img.permute(1, 2, 0), cmap=cmap if img.shape[0] == 1 else None,
                  vmin=0, vmax=1)
        ax.set_title(t, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--character", type=int, default=0, help="class index in images_background_small1")
    ap.add_argument("--copies", type=int, default=7, help="augmented copies shown beside each original")
    ap.add_argument("--photo", default="apple/apple-1.gif", help="MPEG-7 image under images/mpeg7/")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from fewshot.data import ImageSpec, load_omniglot
    from fewshot.data.augment import Augmenter
    from fewshot.data.images import load_images

    data_dir = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
    omni = load_omniglot("background_small1", data_dir, image_size=105)
    c = args.character
    idx = torch.nonzero(omni.y == c).flatten()
    drawers = omni.item_meta.get("drawer")
    x = omni.items(idx)
    names = [f"drawer {int(drawers[i])}" if drawers is not None else f"#{k}" for k, i in enumerate(idx.tolist())]
    alphabet = omni.group_names[int(omni.groups[c])] if omni.groups is not None else ""
    files = [grid(x, names, OUT / "omniglot_20_drawers.png", 5,
                  f"Omniglot: one character drawn by {len(idx)} people ({alphabet}, {omni.class_names[c]})")]
    g = torch.Generator().manual_seed(0)
    chars = omni.items(torch.stack([torch.nonzero(omni.y == k).flatten()[0] for k in (c, c + 1, c + 2)]))
    rows, titles = [], []
    for ch in chars:
        rows += [ch[None], Augmenter.preset("characters")(ch[None].repeat(args.copies, 1, 1, 1), g)]
        titles += ["original"] + [f"augmented {k + 1}" for k in range(args.copies)]
    files.append(grid(torch.cat(rows), titles, OUT / "augment_characters.png", args.copies + 1,
                      "Support-set augmentation, preset 'characters' (affine + elastic)"))
    photo_path = Path(data_dir) / "images" / "mpeg7" / args.photo
    photo = load_images([photo_path], ImageSpec(size=84, channels=3)).float().div(255)
    rows, titles = [], []
    for preset in ("photos", "characters"):
        rows += [photo, Augmenter.preset(preset)(photo.repeat(args.copies, 1, 1, 1), g)]
        titles += [f"original ({preset})"] + [f"{preset} {k + 1}" for k in range(args.copies)]
    files.append(grid(torch.cat(rows), titles, OUT / "augment_photo.png", args.copies + 1,
                      f"Support-set augmentation on a photo-like image (MPEG-7 {args.photo}): presets 'photos' and 'characters'"))
    print("\n".join(str(f) for f in files))


if __name__ == "__main__":
    main()
