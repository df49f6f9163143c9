"""``fewshot playground boolean|fewshot-function|new-digit|draw``: the incremental few-shot playground."""

from __future__ import annotations

import click

from . import main


def _floats(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a comma list of numbers (e.g. 1,0.1,0)") from exc


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a comma list of integers (e.g. 1,2,5,10)") from exc


def _clip(value: str | None):
    """``1`` | ``none`` | one per layer ``none,1,1`` -> float | None | tuple."""
    if value is None or value.strip().lower() == "none":
        return None
    try:
        vals = [None if v.strip().lower() == "none" else float(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a clip bound: a number, 'none', or one per layer (e.g. none,1,1)") from exc
    return vals[0] if len(vals) == 1 else tuple(vals)


def _threads() -> None:
    import torch

    torch.set_num_threads(1)  # tiny networks: one thread is fastest and leaves the others alone


@main.group("playground")
def playground_group() -> None:
    """A small network learning boolean functions and new digits from few shots, drawn as it learns.

    \b
    Examples:
      fewshot playground boolean --out runs/pg/boolean
      fewshot playground learnability --out runs/pg/notebook   # the notebook's table, its configuration
      fewshot playground notebook-fewshot --out runs/pg/nb-fewshot   # the notebook's few-shot cell
      fewshot playground fewshot-function --out runs/pg/fewshot-function
      fewshot playground new-digit --out runs/pg/new-digit
      fewshot playground draw --function 01101001 --out runs/pg/draw
    """


@playground_group.command("boolean")
@click.option("--out", "out_dir", default="runs/playground/boolean", show_default=True, type=click.Path(file_okay=False))
@click.option("--settings", default=None, help="comma list of settings (default: all): "
              "'sigmoid, no bias' | 'sigmoid, bias' | 'tanh, no bias, 0/1 coding' | 'tanh, no bias, ±1 coding'; "
              "separate them with ';'")
@click.option("--levels", type=int, default=8, show_default=True, help="budgets base·2^k for k < levels")
@click.option("--base", type=int, default=5000, show_default=True, help="smallest budget (iterations)")
@click.option("--threshold", type=float, default=0.25, show_default=True, help="learnt when the summed squared error ≤ this")
@click.option("--hidden", type=int, default=8, show_default=True)
@click.option("--mode", type=click.Choice(["batch", "example"]), default="batch", show_default=True,
              help="full-batch or per-example updates (one iteration = one pass over the 8 points)")
@click.option("--init-scale", default="1", show_default=True, help="uniform init amplitude, one number or one per layer (e.g. 4,1)")
@click.option("--clip-weight", type=float, default=None, help="clamp weights to [-c, c] after each update")
@click.option("--clip-bias", type=float, default=None, help="clamp biases to [-c, c] after each update")
@click.option("--slow", "slow_factor", type=float, default=1.0, show_default=True, help="first-layer learning-rate factor")
@click.option("--seed", type=int, default=0, show_default=True)
def boolean_cmd(out_dir, settings, levels, base, threshold, hidden, mode, init_scale, clip_weight, clip_bias, slow_factor, seed):
    """Experiment 1: learnability of all 256 boolean functions of 3 inputs (one network each, all
    trained at once), with and without bias; table + histogram in --out."""
    from ..playground.experiments import BOOLEAN_SETTINGS, run_boolean

    _threads()
    names = [s.strip() for s in settings.split(";")] if settings else list(BOOLEAN_SETTINGS)
    try:
        scale = _floats(init_scale)
        click.echo(run_boolean(out_dir, names, levels, base, threshold, hidden, seed, mode,
                               scale[0] if len(scale) == 1 else tuple(scale), clip_weight, clip_bias, slow_factor,
                               log=click.echo))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@playground_group.command("learnability")
@click.option("--out", "out_dir", default="runs/playground/learnability", show_default=True, type=click.Path(file_okay=False))
@click.option("--hidden", default="8,8", show_default=True, help="hidden layer sizes (the notebook: two layers of 8)")
@click.option("--activation", type=click.Choice(["sigmoid", "tanh"]), default="sigmoid", show_default=True)
@click.option("--gain", type=float, default=3.0, show_default=True, help="units compute act(gain·(z − shift)); notebook 3")
@click.option("--shift", type=float, default=1.0, show_default=True, help="notebook 1 (0 with gain 1: the plain sigmoid)")
@click.option("--bias/--no-bias", default=False, show_default=True)
@click.option("--loss", type=click.Choice(["half_mean", "sse"]), default="half_mean", show_default=True,
              help="half_mean: ½Σ(a−t)² / points (the notebook); sse: Σ(a−t)²")
@click.option("--lr", type=float, default=2.0, show_default=True)
@click.option("--first-layer-scale", type=float, default=0.1, show_default=True,
              help="first layer's learning-rate factor (the notebook's initial_net_first_layer_slow_learning)")
@click.option("--init", "init", default="0.05", show_default=True,
              help="uniform init half-width, one number or one per layer (the notebook's init_rand_ampl 0.1 = ±0.05)")
@click.option("--clip-weights", default="1", show_default=True, help="bound c: a number, 'none', or one per layer (none,1,1)")
@click.option("--clip-bias", default="1", show_default=True, help="as --clip-weights, for the biases")
@click.option("--clip-mode", type=click.Choice(["weights", "update"]), default="weights", show_default=True,
              help="weights: clamp the weights after each update (the notebook); update: clamp each update step")
@click.option("--drop-weights", default=None, help="fraction of weights removed for good, one per layer (e.g. 0.9,0.9)")
@click.option("--stability", type=float, default=None, help="the notebook's stability term, EMA rate (notebook 0.1)")
@click.option("--random-inputs", "random_bits", type=int, default=None,
              help="train on 8 random inputs of this many bits instead of the 3-bit truth table")
@click.option("--functions", type=click.Choice(["zero-at-origin", "all"]), default="zero-at-origin", show_default=True,
              help="the notebook's 128 functions with f(000)=0, or all 256")
@click.option("--protocol", type=click.Choice(["restart", "continuous"]), default="restart", show_default=True,
              help="restart: a fresh network per budget 5000·2^k (the notebook); continuous: one run checked every 500")
@click.option("--levels", type=int, default=8, show_default=True)
@click.option("--base", type=int, default=5000, show_default=True)
@click.option("--threshold", type=float, default=0.25, show_default=True, help="learnt when the final SSE ≤ this")
@click.option("--seed", type=int, default=0, show_default=True)
def learnability_cmd(out_dir, hidden, activation, gain, shift, bias, loss, lr, first_layer_scale, init, clip_weights,
                     clip_bias, clip_mode, drop_weights, stability, random_bits, functions, protocol, levels, base,
                     threshold, seed):
    """Which boolean functions a small network learns, in every setting of the notebook; the
    defaults are the notebook's own configuration (its table: all 128 functions with f(000)=0)."""
    from ..playground.experiments import run_learnability
    from ..playground.network import NetConfig

    _threads()
    sizes = (random_bits or 3, *_ints(hidden), 1)
    scale = _floats(init)
    try:
        cfg = NetConfig(sizes, activation, bias=bias, init_scale=scale[0] if len(scale) == 1 else tuple(scale),
                        clip_weight=_clip(clip_weights), clip_bias=_clip(clip_bias), clip_mode=clip_mode, gain=gain,
                        shift=shift, loss=loss, drop_weights=tuple(_floats(drop_weights)) if drop_weights else None,
                        stability=stability)
        cfg.clip_bounds("weight"), cfg.clip_bounds("bias")
        click.echo(run_learnability(out_dir, cfg, lr, first_layer_scale, levels, base, threshold, functions, protocol,
                                    random_bits, seed, log=click.echo))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@playground_group.command("notebook-fewshot")
@click.option("--out", "out_dir", default="runs/playground/notebook-fewshot", show_default=True, type=click.Path(file_okay=False))
@click.option("--chains", type=int, default=10, show_default=True, help="independent runs of the cell (batched)")
@click.option("--tests", type=int, default=31, show_default=True, help="functions taught one after another per chain")
@click.option("--lr", type=float, default=1.0, show_default=True, help="the notebook's cell ran with lr 1 (set by the cell before)")
@click.option("--first-layer-scale", type=float, default=0.1, show_default=True)
@click.option("--end", type=float, default=0.7, show_default=True, help="a point is learnt when |error| < this (few_shot_end)")
@click.option("--max-try", type=int, default=100, show_default=True)
@click.option("--epochs", type=int, default=30, show_default=True, help="passes over the 8 points (max_iter)")
@click.option("--seed", type=int, default=0, show_default=True)
def notebook_fewshot_cmd(out_dir, chains, tests, lr, first_layer_scale, end, max_try, epochs, seed):
    """The notebook's own few-shot cell on boolean functions, beside the results it printed."""
    from ..playground.experiments import run_notebook_fewshot

    _threads()
    try:
        click.echo(run_notebook_fewshot(out_dir, chains=chains, tests=tests, lr=lr, slow_factor=first_layer_scale, end=end,
                                        max_try=max_try, epochs=epochs, seed=seed, log=click.echo))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@playground_group.command("fewshot-function")
@click.option("--out", "out_dir", default="runs/playground/fewshot-function", show_default=True, type=click.Path(file_okay=False))
@click.option("--repetitions", type=int, default=1000, show_default=True)
@click.option("--threshold", type=float, default=0.3, show_default=True,
              help="per-point squared error counted as learnt (the notebook's few_shot_threshold 0.3; 0.1 is stricter)")
@click.option("--max-steps", type=int, default=200, show_default=True, help="gradient steps per presentation at most")
@click.option("--max-presentations", type=int, default=50, show_default=True, help="presentations per point at most")
@click.option("--slow", default="1,0.1,0", show_default=True, help="first-layer learning-rate factors to compare")
@click.option("--lr", type=float, default=0.5, show_default=True,
              help="learning rate while learning the new function (the notebook's lr_few_shot 0.5; 3.0 is the faster option)")
@click.option("--hidden", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def fewshot_function_cmd(out_dir, repetitions, threshold, max_steps, max_presentations, slow, lr, hidden, seed):
    """Experiment 2: pre-train on one function, re-initialise the last layer, learn a new random
    function one point at a time until each is below --threshold; shots needed and failures."""
    from ..playground.experiments import run_fewshot_function

    _threads()
    click.echo(run_fewshot_function(out_dir, repetitions, hidden, threshold, max_steps, max_presentations, _floats(slow),
                                    lr, seed, log=click.echo))


@playground_group.command("new-digit")
@click.option("--out", "out_dir", default="runs/playground/new-digit", show_default=True, type=click.Path(file_okay=False))
@click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="folder with mnist/t10k-*.gz (default: $FEWSHOT_DATA)")
@click.option("--source", type=click.Choice(["auto", "mnist", "digits", "emnist-digits", "emnist-letters"]), default="auto",
              show_default=True, help="auto: MNIST t10k when found, else scikit-learn's 8x8 digits (offline); emnist-*: "
              "EMNIST's test split from --emnist")
@click.option("--emnist", type=click.Path(exists=True), default=None, help="EMNIST's official gzip.zip (or its gzip/ folder)")
@click.option("--points-per-shot", type=int, default=1, show_default=True,
              help="examples of the new class given together in each shot (the notebook's few_shot_more_at_once)")
@click.option("--pool", type=int, default=None, help="average-pool images by this factor (default 2 for MNIST: 14x14)")
@click.option("--hidden", type=int, default=128, show_default=True)
@click.option("--shots", default="1,2,5,10", show_default=True)
@click.option("--repeats", default="1,5,20", show_default=True, help="times each example is reused while teaching")
@click.option("--draws", type=int, default=5, show_default=True, help="random draws of the few examples per digit")
@click.option("--retrain-draws", type=int, default=1, show_default=True, help="draws for the (costly) retraining baseline")
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option("--slow", "slow_factor", type=float, default=0.01, show_default=True,
              help="learning-rate factor of the rest of the network while teaching")
@click.option("--seed", type=int, default=0, show_default=True)
def new_digit_cmd(out_dir, data_dir, source, emnist, points_per_shot, pool, hidden, shots, repeats, draws, retrain_draws,
                  epochs, slow_factor, seed):
    """Experiment 3: pre-train on nine digits, teach the tenth from 1/2/5/10 examples; accuracy on
    the new digit and forgetting of the old nine, against prototypes and retraining."""
    from ..playground.experiments import run_new_digit

    _threads()
    try:
        if points_per_shot < 1:
            raise ValueError(f"--points-per-shot must be at least 1; got {points_per_shot}")
        click.echo(run_new_digit(out_dir, data_dir, source, pool, hidden, [s * points_per_shot for s in _ints(shots)],
                                 _ints(repeats), draws, retrain_draws, epochs, slow_factor, seed, log=click.echo,
                                 emnist=emnist))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@playground_group.command("draw")
@click.option("--out", "out_dir", default="runs/playground/draw", show_default=True, type=click.Path(file_okay=False))
@click.option("--function", default="01101001", show_default=True, help="truth table, output on 000 first (parity)")
@click.option("--hidden", type=int, default=8, show_default=True)
@click.option("--activation", type=click.Choice(["sigmoid", "tanh"]), default="sigmoid", show_default=True)
@click.option("--bias/--no-bias", default=True, show_default=True)
@click.option("--signed", is_flag=True, help="±1 coding (needs --activation tanh)")
@click.option("--steps", type=int, default=20000, show_default=True)
@click.option("--lr", type=float, default=None, help="default 0.5 (sigmoid) or 0.1 (tanh)")
@click.option("--gif/--no-gif", default=True, show_default=True, help="also write training.gif")
@click.option("--frames", type=int, default=24, show_default=True, help="GIF frames (log-spaced over training)")
@click.option("--seed", type=int, default=0, show_default=True)
def draw_cmd(out_dir, function, hidden, activation, bias, signed, steps, lr, gif, frames, seed):
    """Train one network on a boolean function and draw it for every input (activations as fill,
    weights as coloured lines, target circled), its training history, and a GIF of training."""
    from ..playground.experiments import run_draw

    _threads()
    try:
        click.echo(run_draw(out_dir, function, hidden, activation, bias, signed, steps, lr, frames, gif, seed, log=click.echo))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
