"""``fewshot text eval`` / ``fewshot text predict``: few-shot intent classification."""

from __future__ import annotations

import click

from . import main
from .common import Fraction, check_device, echo_json, parse_params

METHOD_HELP = "prototype | knn | logreg | setfit, or any registered method that works on embeddings"
ENCODER_HELP = "all-MiniLM-L6-v2 (packaged, offline), a local sentence-transformers folder, or 'hashing' (no model)"


def _encoder(model: str, device: str, batch_size: int):
    from ..text.encoder import load_encoder

    try:
        return load_encoder(model, device=device, batch_size=batch_size)
    except (ImportError, FileNotFoundError) as exc:
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


@text.command("eval")
@click.option("--dataset", required=True, help="banking77 | clinc150 | csv:PATH | jsonl:PATH (a file is split 70/30 per class)")
@click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="folder holding text/banking77, text/clinc150 (default: $FEWSHOT_DATA)")
@click.option("--shot", type=click.IntRange(min=1), default=5, show_default=True, help="examples of every class (full label space)")
@click.option("--method", default="prototype", show_default=True, help=METHOD_HELP)
@click.option("-p", "--param", "params", multiple=True, help="method option KEY=VALUE (e.g. -p k=3, -p max_pairs=500, -p head=prototype)")
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True, help="number of K-shot samples (seeds 0..N-1)")
@click.option("--encoder", "model", default="all-MiniLM-L6-v2", show_default=True, help=ENCODER_HELP)
@click.option("--text-col", default=None, help="CSV/JSONL text column (default: text)")
@click.option("--label-col", default=None, help="CSV/JSONL label column (default: label, category or intent)")
@click.option("--max-drop", type=Fraction(0, 1, closed=True), default=0.02, show_default=True, help="CLINC150: threshold keeps validation in-scope accuracy within this")
@click.option("--val-per-class", type=click.IntRange(min=1), default=None, help="CLINC150: validation items per class used to choose the threshold (default all)")
@click.option("--test-per-class", type=click.IntRange(min=1), default=None, help="score this many test items per class (default all)")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="CLINC150: save the accuracy / OOS-recall trade-off PNG here")
@click.option("--device", default="cpu", show_default=True, callback=check_device)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="encoding batch size")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def eval_cmd(dataset, data_dir, shot, method, params, seeds, model, text_col, label_col, max_drop, val_per_class,
             test_per_class, plot, device, batch_size, as_json):
    """K-shot accuracy ± 95% CI over seeds of the K-shot sample (and OOS metrics on CLINC150).

    \b
    Examples:
      fewshot text eval --dataset banking77 --shot 5 --method logreg --seeds 5
      fewshot text eval --dataset clinc150 --shot 10 --method prototype --plot oos.png --json
      fewshot text eval --dataset csv:tickets.csv --label-col team --shot 3 --method setfit -p max_pairs=300
    """
    from ..text.data import load_text_dataset
    from ..text.evaluate import evaluate_kshot

    try:
        splits = load_text_dataset(dataset, data_dir, text_col, label_col)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    enc = _encoder(model, device, batch_size)
    make = _classifier_factory(enc, method, parse_params(params))
    oos = "oos_test" in splits and "val" in splits
    try:
        res = evaluate_kshot(make, splits["train"], splits["test"], shot, range(seeds),
                             val=splits.get("val") if oos else None, oos_test=splits.get("oos_test") if oos else None,
                             max_drop=max_drop, val_per_class=val_per_class, test_per_class=test_per_class)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if plot and res.curve is not None:
        from ..text.openset import plot_tradeoff

        plot_tradeoff({f"{method}, by {rule}": c for rule, c in res.curve.items()}, plot,
                      title=f"{dataset} {shot}-shot: out-of-scope rejection")
    out = {"dataset": dataset, "method": method, "encoder": model, **res.to_dict()}
    if as_json:
        echo_json(out)
        return
    click.echo(f"{dataset} {shot}-shot {method}: accuracy {100 * res.accuracy:.2f} ± {100 * res.ci95:.2f} "
               f"({res.seeds} seeds, {res.test_items} test items; fit {res.fit_seconds:.1f}s, predict {res.predict_seconds:.1f}s per seed)")
    for rule, o in (res.oos or {}).items():
        click.echo(f"  out-of-scope by {rule}: recall {100 * o['oos_recall']:.2f} ± {100 * o['oos_recall_ci95']:.2f}, in-scope "
                   f"accuracy {100 * o['in_scope_accuracy']:.2f} (vs {100 * o['in_scope_accuracy_no_rejection']:.2f} without "
                   f"rejection) at threshold {o['threshold']:.3f}")


@text.command("predict")
@click.option("--support", required=True, type=click.Path(exists=True, dir_okay=False), help="CSV/JSONL of labelled examples")
@click.option("--query", "queries", required=True, multiple=True, help="text to classify (repeat for several)")
@click.option("--method", default="prototype", show_default=True, help=METHOD_HELP)
@click.option("-p", "--param", "params", multiple=True, help="method option KEY=VALUE")
@click.option("--threshold", type=Fraction(-1, 1, closed=True), default=None, help="answer 'unknown' when the confidence is below this")
@click.option("--reject-by", type=click.Choice(["probability", "similarity"]), default="probability", show_default=True,
              help="confidence: top class probability, or top cosine similarity to a class prototype (better with few classes)")
@click.option("--encoder", "model", default="all-MiniLM-L6-v2", show_default=True, help=ENCODER_HELP)
@click.option("--text-col", default=None)
@click.option("--label-col", default=None)
@click.option("--device", default="cpu", show_default=True, callback=check_device)
@click.option("--json", "as_json", is_flag=True)
def predict_cmd(support, queries, method, params, threshold, reject_by, model, text_col, label_col, device, as_json):
    """Classify texts among the labels of a small support file.

    \b
    Examples:
      fewshot text predict --support intents.csv --query "I lost my card" --query "hi there" --threshold 0.3
      fewshot text predict --support intents.csv --query "play jazz" --reject-by similarity --threshold 0.5
    """
    from ..text.data import read_table

    try:
        texts, labels = read_table(support, text_col, label_col)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    enc = _encoder(model, device, 64)
    clf = _classifier_factory(enc, method, parse_params(params))(0)
    try:
        clf.fit(texts, labels)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    proba, sim = clf.proba_and_similarity(list(queries))
    conf, pred = proba.max(-1)
    score = conf if reject_by == "probability" else sim
    rows = []
    for i, q in enumerate(queries):
        c = float(score[i])
        label = clf.classes_[int(pred[i])] if threshold is None or c >= threshold else "unknown"
        rows.append({"query": q, "prediction": label, "score": c, "similarity": float(sim[i]),
                     "probabilities": dict(zip(clf.classes_, proba[i].tolist()))})
    if as_json:
        echo_json({"support": support, "method": method, "threshold": threshold, "reject_by": reject_by, "predictions": rows})
    else:
        for r in rows:
            click.echo(f"{r['query']}\t{r['prediction']}\t{r['score']:.3f}")
