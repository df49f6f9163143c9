"""Experiment 3: pre-train on nine digits, then teach the tenth from a few examples.

One pre-trained network per held-out digit, all ten trained at once as a batch (each masks out
its own held-out digit). Teaching compares, for 1/2/5/10 examples of the new digit:

* ``incremental``: the new digit's output unit is re-initialised and trained on the few
  examples (each reused ``repeats`` times, one example per step) while the rest of the network
  learns ``slow_factor`` times slower; forgetting = drop of accuracy on the old nine digits;
* ``prototype``: nearest class mean on the pre-trained hidden layer (the new digit's prototype
  is the mean of its few examples), nothing is trained;
* ``retrain``: a fresh network trained from scratch on the old data plus the few examples
  (each weighted as if seen ``repeats`` times per epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nn.distances import class_means, pairwise_logits
from ..utils import mean_ci95
from .network import BatchedMLP, NetConfig


@dataclass
class DigitData:
    """Flattened images in [0, 1]: ``x_train [N, D]``, ``y_train [N]``, ``x_test``, ``y_test``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    side: int
    class_names: tuple[str, ...] = tuple("0123456789")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_digit_data(data_dir: str | None = None, source: str = "auto", pool: int | None = None, seed: int = 0,
                    emnist: str | None = None) -> DigitData:
    """MNIST's t10k set split into random halves (train/test), or scikit-learn's 8x8 digits
    (``source="digits"``, or ``auto`` when MNIST is not found), or an EMNIST test split
    (``source="emnist-digits"`` / ``"emnist-letters"``, read from the official ``gzip.zip`` at
    ``emnist``). ``pool`` average-pools images (default: 2 for 28x28 images, giving 14x14, to keep
    CPU runs short; 1 for 8x8 digits)."""
    from ..data import load_digits_images, load_emnist, load_mnist

    ds = None
    if source.startswith("emnist-"):
        if emnist is None:
            raise ValueError(f"source {source!r} needs the path of EMNIST's gzip.zip (--emnist PATH)")
        ds = load_emnist(emnist, source.removeprefix("emnist-"), "test")
        name = f"EMNIST {source.removeprefix('emnist-')} test set (halves)"
    if ds is None and source in ("auto", "mnist"):
        try:
            ds, name = load_mnist(data_dir), "MNIST t10k (halves)"
        except (FileNotFoundError, ValueError):
            if source == "mnist":
                raise
    if ds is None:
        if source not in ("auto", "digits"):
            raise ValueError(f"unknown digit source {source!r}; use auto, mnist, digits, emnist-digits or emnist-letters")
        ds, name = load_digits_images(), "scikit-learn 8x8 digits (halves)" + (" — MNIST not found" if source == "auto" else "")
    x = ds.x.float() / 255.0
    if pool is None:
        pool = 2 if x.shape[-1] >= 28 else 1
    if pool > 1:
        x = F.avg_pool2d(x, pool)
    side = x.shape[-1]
    x = x.flatten(1)
    y = ds.y.clone()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    half = len(y) // 2
    tr, te = perm[:half], perm[half:]
    return DigitData(x[tr], y[tr], x[te], y[te], name + (f", {pool}x{pool} pooled" if pool > 1 else ""), side,
                     tuple(ds.class_names))


def _class_weights(y: torch.Tensor, heldout: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` 1 where item n is not network b's held-out digit."""
    return (y.unsqueeze(0) != heldout.unsqueeze(1)).float()


def train_minibatch(net: BatchedMLP, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, epochs: int, lr: float,
                    batch_size: int = 64, seed: int = 0, extra_x: torch.Tensor | None = None,
                    extra_y: torch.Tensor | None = None, extra_weight: float = 0.0, num_classes: int = 10) -> None:
    """Mini-batch gradient descent on the summed squared error against one-hot targets.

    ``weights [B, N]`` selects each network's items; ``extra_x [B, n, D]`` are per-network extra
    items added to every mini-batch with weight ``extra_weight`` (relative to a normal item)."""
    g = torch.Generator().manual_seed(seed)
    t = F.one_hot(y, num_classes).float()
    B = net.batch
    lrs = [lr / batch_size] * net.config.num_layers
    et = None if extra_y is None else F.one_hot(extra_y, num_classes).float()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx].unsqueeze(0).expand(B, -1, -1)
            tb = t[idx].unsqueeze(0).expand(B, -1, -1)
            wb = weights[:, idx]
            if extra_x is not None:
                xb = torch.cat([xb, extra_x], 1)
                tb = torch.cat([tb, et], 1)
                wb = torch.cat([wb, torch.full(extra_y.shape, extra_weight)], 1)
            net.step(net.backward(net.forward(xb), tb, wb), lrs)


def accuracy_split(pred: torch.Tensor, y: torch.Tensor, heldout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred [B, N]`` -> accuracy on each network's new digit and on its old nine ``([B], [B])``."""
    correct = (pred == y.unsqueeze(0)).float()
    new = (y.unsqueeze(0) == heldout.unsqueeze(1)).float()
    return (correct * new).sum(1) / new.sum(1), (correct * (1 - new)).sum(1) / (1 - new).sum(1)


def predict(net: BatchedMLP, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Arg-max output of every network on shared ``x [N, D]``: ``[B, N]``."""
    return torch.cat([net(x[i:i + chunk]).argmax(-1) for i in range(0, len(x), chunk)], 1)


@dataclass
class NewDigitConfig:
    hidden: int = 128
    lr: float = 0.5
    epochs: int = 15
    batch_size: int = 16
    teach_lr: float = 0.05
    repeats: tuple[int, ...] = (1, 5, 20)
    slow_factor: float = 0.01
    shots: tuple[int, ...] = (1, 2, 5, 10)
    draws: int = 5
    retrain_draws: int = 1
    seed: int = 0


def new_digit_experiment(data: DigitData, cfg: NewDigitConfig = NewDigitConfig(),
                         digits: Sequence[int] | None = None, log=print) -> dict:
    """Run experiment 3; returns ``{"rows": [...], "pretrain": {...}, "seconds": {...}}``.
    ``digits``: the classes held out one at a time (default: all of ``data``'s classes)."""
    torch.manual_seed(cfg.seed)
    C = data.num_classes
    digits = tuple(range(C)) if digits is None else digits
    D = data.x_train.shape[1]
    heldout = torch.tensor(list(digits))
    B = len(heldout)
    net_cfg = NetConfig((D, cfg.hidden, C), "sigmoid", bias=True,
                        init_scale=(math.sqrt(3.0 / D), math.sqrt(3.0 / cfg.hidden)))
    secs = {}
    t0 = time.perf_counter()
    pre = BatchedMLP.create(net_cfg, B, seed=cfg.seed)
    train_minibatch(pre, data.x_train, data.y_train, _class_weights(data.y_train, heldout), cfg.epochs, cfg.lr,
                    cfg.batch_size, seed=cfg.seed, num_classes=C)
    secs["pretrain"] = time.perf_counter() - t0
    pred = predict(pre, data.x_test)
    _, old_before = accuracy_split(pred, data.y_test, heldout)
    log(f"pre-trained {B} networks ({D}-{cfg.hidden}-{C}) in {secs['pretrain']:.1f}s; old-nine accuracy "
        f"{100 * old_before.mean():.2f}%")
    g = torch.Generator().manual_seed(cfg.seed + 1)
    rows: list[dict] = []
    secs["incremental"] = secs["prototype"] = secs["retrain"] = 0.0
    for shot in cfg.shots:
        # few examples of each network's new digit, one draw per (draw, digit): [R*B, shot]
        picks = []
        for _ in range(cfg.draws):
            for d in heldout.tolist():
                pool = torch.nonzero(data.y_train == d).flatten()
                picks.append(pool[torch.randperm(len(pool), generator=g)[:shot]])
        picks = torch.stack(picks)
        owner = torch.arange(B).repeat(cfg.draws)  # which pre-trained network each run starts from
        few_x = data.x_train[picks]  # [R*B, shot, D]
        new_digit = heldout[owner]
        # a balanced memory of the old digits: `shot` stored examples of each (for rehearsal)
        mem = []
        for r in range(len(owner)):
            d = int(new_digit[r])
            mem.append(torch.cat([(lambda pool: pool[torch.randperm(len(pool), generator=g)[:shot]])(
                torch.nonzero(data.y_train == c).flatten()) for c in range(C) if c != d]))
        mem = torch.stack(mem)  # [R*B, (C-1)*shot]
        # --- incremental: re-initialised new output unit, the rest learning slowly
        for rehearse in (False, True):
            for repeats in cfg.repeats:
                t1 = time.perf_counter()
                net = pre.select(owner)
                fresh = BatchedMLP.create(net_cfg, len(owner), seed=cfg.seed + 100 + shot)
                rows_i = torch.arange(len(owner))
                net.weights[-1][rows_i, :, new_digit] = fresh.weights[-1][rows_i, :, new_digit]
                net.biases[-1][rows_i, new_digit] = fresh.biases[-1][rows_i, new_digit]
                unit_scale = torch.full((len(owner), C), cfg.slow_factor)
                unit_scale[rows_i, new_digit] = 1.0
                teach_x, teach_y = few_x, new_digit.unsqueeze(1).expand(-1, shot)
                if rehearse:  # new examples x(C-1), as frequent as the old classes' memory together
                    teach_x = torch.cat([teach_x.repeat(1, C - 1, 1), data.x_train[mem]], 1)
                    teach_y = torch.cat([teach_y.repeat(1, C - 1), data.y_train[mem]], 1)
                teach_t = F.one_hot(teach_y, C).float()
                for _ in range(repeats):
                    for j in torch.randperm(teach_x.shape[1], generator=g).tolist():
                        grads = net.backward(net.forward(teach_x[:, j:j + 1]), teach_t[:, j:j + 1])
                        grads.weights[-1].mul_(unit_scale.unsqueeze(1))  # only the new unit learns at full speed
                        grads.biases[-1].mul_(unit_scale)
                        net.step(grads, [cfg.teach_lr * cfg.slow_factor, cfg.teach_lr])
                acc_new, acc_old = accuracy_split(predict(net, data.x_test), data.y_test, new_digit)
                secs["incremental"] += time.perf_counter() - t1
                name = "incremental + rehearsal" if rehearse else "incremental"
                rows.append(_row(f"{name}, each example x{repeats}", shot, acc_new, acc_old, old_before[owner]))
        # --- nearest prototype on the pre-trained hidden layer
        t1 = time.perf_counter()
        p_new, p_old = [], []
        for b in range(B):
            one = pre.select([b])
            h_tr, h_te = one.hidden(data.x_train)[0], one.hidden(data.x_test)[0]
            keep = data.y_train != heldout[b]
            for r in torch.nonzero(owner == b).flatten().tolist():
                h_few = one.hidden(few_x[r])[0]
                protos = class_means(torch.cat([h_tr[keep], h_few]),
                                     torch.cat([data.y_train[keep], heldout[b].repeat(shot)]), C)
                pred_p = pairwise_logits(h_te, protos).argmax(1)
                a_new, a_old = accuracy_split(pred_p.unsqueeze(0), data.y_test, heldout[b:b + 1])
                p_new.append(a_new)
                p_old.append(a_old)
        secs["prototype"] += time.perf_counter() - t1
        rows.append(_row("prototype (hidden layer)", shot, torch.cat(p_new), torch.cat(p_old), None))
        # --- retraining from scratch on the old data plus the few examples
        if cfg.retrain_draws > 0:
            t1 = time.perf_counter()
            sel = torch.arange(min(cfg.retrain_draws, cfg.draws) * B)
            fresh = BatchedMLP.create(net_cfg, len(sel), seed=cfg.seed + 200 + shot)
            steps_per_epoch = math.ceil(len(data.y_train) / cfg.batch_size)
            train_minibatch(fresh, data.x_train, data.y_train, _class_weights(data.y_train, new_digit[sel]), cfg.epochs,
                            cfg.lr, cfg.batch_size, seed=cfg.seed + 300 + shot, extra_x=few_x[sel],
                            extra_y=new_digit[sel].unsqueeze(1).expand(-1, shot),
                            extra_weight=max(cfg.repeats) / steps_per_epoch, num_classes=C)
            acc_new, acc_old = accuracy_split(predict(fresh, data.x_test), data.y_test, new_digit[sel])
            secs["retrain"] += time.perf_counter() - t1
            rows.append(_row("retrain from scratch", shot, acc_new, acc_old, None))
        log(f"  {shot:2d} shot(s): " + "; ".join(f"{r['method']} new {100 * r['new']:.1f}% old {100 * r['old']:.1f}%"
                                                for r in rows if r["shot"] == shot))
    return {"rows": rows, "old_before": float(old_before.mean()), "seconds": secs, "net": pre, "heldout": heldout,
            "config": cfg, "source": data.source, "sizes": net_cfg.sizes}


def _row(method: str, shot: int, acc_new: torch.Tensor, acc_old: torch.Tensor, old_before: torch.Tensor | None) -> dict:
    new, new_ci = mean_ci95(acc_new.numpy())
    old, old_ci = mean_ci95(acc_old.numpy())
    row = {"method": method, "shot": shot, "runs": len(acc_new), "new": new, "new_ci": new_ci, "old": old, "old_ci": old_ci}
    if old_before is not None:
        row["drop"] = float((old_before - acc_old).mean())
    return row
