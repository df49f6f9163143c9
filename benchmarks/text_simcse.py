"""CPFT's self-supervised stage, measured: SimCSE (Gao et al. 2021) on a dataset's unlabelled
training utterances, then the default method (``self_training``) on the tuned encoder's
embeddings, against the frozen encoder, on the validation splits of ``text_select.py`` (``--split
test``: the official test splits, as ``text.py`` scores them, once a setting is chosen). The stage
runs once per dataset (it reads no labels); its CPU seconds are stated apart from the per-fit
ones. A concatenation (``minilm:0.3+mpnet:0.7``) tunes each part on its own. Rows go to
``results/text_simcse.json``, rendered as ``results/text_simcse.md``.

    python benchmarks/text_simcse.py --steps 100 --lr 5e-6 --threads 2
    # encoders tuned beforehand by `fewshot text pretrain` (same steps / lr) on the dataset's training texts:
    python benchmarks/text_simcse.py --datasets clinc150 --encoder minilm:0.3+mpnet:0.7 \
        --tuned models/minilm-clinc:0.3+models/mpnet-clinc:0.7 --variant share1.0+knn0.3 --split test
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from text_select import VARIANTS, validation_splits  # noqa: E402  (sets 1 BLAS thread for the heads' L-BFGS)

from fewshot.text import evaluate_kshot, load_encoder, load_text_dataset  # noqa: E402
from fewshot.text.contrastive import pretrain_simcse  # noqa: E402
from fewshot.text.encoder import ConcatEncoder, EmbeddingCache  # noqa: E402
from fewshot.text.setfit import build_text_classifier  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def simcse(encoder, texts: list[str], steps: int, batch_size: int, lr: float) -> tuple[object, float, list[float]]:
    """A tuned copy of ``encoder`` (each part of a concatenation on its own), its CPU seconds and
    the losses; the copy caches its embeddings in a throw-away folder (its weights are fixed now)."""
    if isinstance(encoder, ConcatEncoder):
        parts = [simcse(e, texts, steps, batch_size, lr) for e in encoder.parts]
        return (ConcatEncoder([p[0] for p in parts], encoder.shares), sum(p[1] for p in parts),
                [sum(v) for v in zip(*(p[2] for p in parts))])
    tuned = encoder.tuned_copy()
    tuned.progress = False
    c0 = time.process_time()
    losses = pretrain_simcse(tuned, texts, steps=steps, batch_size=batch_size, lr=lr)
    cpu = time.process_time() - c0
    tuned.model_id = f"{encoder.model_id}+simcse:{steps}x{batch_size}@{lr}"
    tuned.cache = EmbeddingCache(tempfile.mkdtemp(prefix="simcse-"))
    return tuned, cpu, losses


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def test_splits(name: str, data_dir: str | None) -> dict:
    """``text.py``'s protocol: K-shot from ``train``, scored on ``test``; CLINC150's OOS threshold on ``val``."""
    splits = load_text_dataset(name, data_dir)
    out = {"train": splits["train"], "val": splits["test"]}  # "val": the scored split, as in validation_splits
    if "oos_test" in splits:
        out.update(threshold=splits["val"], oos=splits["oos_test"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--datasets", default="banking77,clinc150")
    ap.add_argument("--shots", default="5,10")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--tuned", default=None, help="an encoder already tuned by `fewshot text pretrain` (one dataset only)")
    ap.add_argument("--variant", default=None, help="a text_select.py variant instead of the default method")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "text_simcse.json"))
    args = ap.parse_args()
    # before any pretraining: a bad name or a tuned encoder given for several datasets fails at once
    if args.variant and args.variant not in VARIANTS:
        ap.error(f"--variant {args.variant!r}: not a text_select.py variant; choose from {sorted(VARIANTS)}")
    if args.tuned and "," in args.datasets:
        ap.error("--tuned is one dataset's pretrained encoder: give a single --datasets name")
    head, params = VARIANTS[args.variant] if args.variant else ("self_training", {})
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    frozen = load_encoder(args.encoder)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    for dataset in args.datasets.split(","):
        s = (validation_splits if args.split == "val" else test_splits)(dataset, args.data_dir)
        load0 = os.getloadavg()[0]
        if args.tuned:
            tuned, pretrain_cpu, losses = load_encoder(args.tuned), None, []
        else:
            tuned, pretrain_cpu, losses = simcse(frozen, s["train"].texts, args.steps, args.batch_size, args.lr)
        c0 = time.process_time()
        texts = sorted({t for part in s.values() for t in part.texts})
        tuned.encode(texts)
        encode_cpu = time.process_time() - c0
        made = (f"tuned encoder {args.tuned}" if args.tuned else f"SimCSE {args.steps} x {args.batch_size} in "
                f"{pretrain_cpu:.0f} CPU s (loss {_mean(losses[:10]):.4f} -> {_mean(losses[-10:]):.4f})")
        print(f"{dataset}: {made}, {len(texts)} texts encoded in {encode_cpu:.0f} CPU s", flush=True)
        for shot in map(int, args.shots.split(",")):
            for name, enc in (("frozen", frozen), ("simcse", tuned)):
                res = evaluate_kshot(lambda seed: build_text_classifier(enc, head, **params), s["train"], s["val"],
                                     shot, range(args.seeds), val=s.get("threshold"), oos_test=s.get("oos"))
                row = {"dataset": dataset, "split": args.split, "shot": shot, "encoder": args.encoder, "variant": name,
                       "method": f"text_select:{args.variant}" if args.variant else "self_training", "seeds": args.seeds, "accuracy": res.accuracy, "ci95": res.ci95,
                       "fit_cpu_s": res.fit_cpu_seconds, "threads": args.threads,
                       "simcse": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                                  "pretrain_cpu_s": pretrain_cpu, "encode_cpu_s": encode_cpu,
                                  "loss_first10": _mean(losses[:10]), "loss_last10": _mean(losses[-10:]),
                                  "tuned": args.tuned}
                       if name == "simcse" else None,
                       "oos": {k: {m: o[m] for m in ("oos_recall", "in_scope_accuracy", "auroc")} for k, o in (res.oos or {}).items()},
                       "load": [load0, os.getloadavg()[0]], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                key = (dataset, args.split, shot, args.encoder, name, row["method"],
                       *((args.steps, args.lr, args.tuned) if name == "simcse" else (None, None, None)))
                rows = [r for r in rows if (r["dataset"], r.get("split", "val"), r["shot"], r["encoder"], r["variant"], r["method"],
                                            *((r["simcse"] or {}).get(k) for k in ("steps", "lr", "tuned"))) != key]
                rows.append(row)
                out.write_text(json.dumps(rows, indent=1))
                render(rows, out.with_suffix(".md"))
                oos = "".join(f"  OOS[{k}] {100 * o['oos_recall']:.1f} at {100 * o['in_scope_accuracy']:.1f}"
                              for k, o in row["oos"].items())
                print(f"{dataset} {args.split} {shot}-shot {args.encoder} {name} {row['method']}: {100 * res.accuracy:.2f} ± {100 * res.ci95:.2f}"
                      f"  fit {res.fit_cpu_seconds:.1f} CPU s{oos}", flush=True)


def render(rows: list[dict], path: Path) -> None:
    """The rows as one markdown table, frozen and tuned side by side per setting."""
    lines = ["# CPFT's SimCSE stage (benchmarks/text_simcse.py)", "",
             "Generated from text_simcse.json. Accuracy %, mean ± 95% CI over K-shot seeds 0..N-1; OOS: recall at the "
             "validation threshold (in-scope accuracy within 2 points on validation) and the in-scope fall it cost on the "
             "scored split. SimCSE CPU s: once per dataset (all parts), not per fit.", "",
             "| dataset | split | shot | encoder | method | variant | lr | accuracy | fit CPU s | SimCSE CPU s | "
             "OOS recall by neighbours (fall) | threads | load | date |", "|" + "---|" * 14]
    order = sorted(rows, key=lambda r: (r["dataset"], r.get("split", "val"), r["encoder"], r["method"], r["shot"],
                                        (r["simcse"] or {}).get("lr") or 0, r["variant"] != "frozen"))
    for r in order:
        sim = r["simcse"] or {}
        cpu = sim.get("pretrain_cpu_s")
        pretrained = "" if not sim else f"{cpu:.0f}" if cpu is not None else f"tuned beforehand ({sim.get('tuned')})"
        o = r["oos"].get("neighbours")
        oos = f"{100 * o['oos_recall']:.1f} ({100 * (r['accuracy'] - o['in_scope_accuracy']):.2f})" if o else ""
        lines.append(f"| {r['dataset']} | {r.get('split', 'val')} | {r['shot']} | {r['encoder']} | {r['method']} | "
                     f"{r['variant']} | {sim.get('lr', '')} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | "
                     f"{r['fit_cpu_s']:.1f} | {pretrained} | "
                     f"{oos} | {r['threads']} | {r['load'][0]:.1f}, {r['load'][1]:.1f} | {r['date']} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
