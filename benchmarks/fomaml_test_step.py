"""Diagnostic behind reproduce_180min_notes.md: fomaml's 3-CPU-hour checkpoint on the first 200 of
reproduce.py's 1000 fixed held-out 5w1s tasks, for three test-time inner step sizes.

These are evaluation tasks: the numbers locate the defect (a step size tuned for 20-way tasks
overshoots on 5-way ones); they do not choose a default, which needs tasks from training alphabets.

    FEWSHOT_DATA=../shared/data python benchmarks/fomaml_test_step.py /work/runs/reproduce/budget180min_seed0/fomaml/run
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402
from fewshot.engine.checkpoint import load_checkpoint  # noqa: E402
from fewshot.engine.evaluate import evaluate  # noqa: E402
from fewshot.tasks.episodes import TaskSet  # noqa: E402

torch.set_num_threads(2)
_, test = reproduce._data(None)
episodes = list(TaskSet.generate(test, 5, 1, 5, 1000, seed=0).episodes(test))[:200]
for lr, steps in [(0.1, 10), (0.025, 10), (0.05, 10)]:
    method, _ = load_checkpoint(Path(sys.argv[1]), "last", overrides={"test_inner_lr": lr, "test_inner_steps": steps})
    c0 = time.process_time()
    r = evaluate(method, episodes, "cpu")
    print(f"test {steps} x {lr}: 5w1s {100 * r.accuracy:.1f} ± {100 * r.ci95:.1f} on {len(episodes)} tasks, "
          f"{time.process_time() - c0:.0f} CPU s", flush=True)
