#!/usr/bin/env bash
# Issue 11's check that the refactor changed structure, not results: one small run per family with
# the code before the refactor and the current code, the same command for both.
#   git worktree add /tmp/fewshot-old bc20372 && bash benchmarks/refactor_check.sh /tmp/fewshot-old
# Needs Omniglot's background_small1/small2 archives in $FEWSHOT_DATA (default ../shared/data).
set -u
OLD=${1:?path of a checkout of the code before the refactor (e.g. commit bc20372)}
NEW=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$NEW/.venv/bin/python}
D=${FEWSHOT_DATA:-$NEW/../shared/data}
OUT=$(mktemp -d)
export OMP_NUM_THREADS=1
for m in protonet matching relation siamese maml reptile mann metanet baseline simpleshot discriminative-kshot knn; do
  for ver in old new; do
    src=$OLD/src; [ $ver = new ] && src=$NEW/src
    extra=""; [ $m = mann ] && [ $ver = old ] && extra="-p labels=5"  # the old head-size name
    run=$OUT/$ver-$m
    PYTHONPATH=$src $PY -m fewshot train --method $m --dataset omniglot --split background_small1 --data-dir "$D" \
      --way 5 --shot 1 --query 5 --episodes 100 --val-fraction 0 --seed 0 --no-plots --quiet --out $run $extra \
      >/dev/null 2>$run.err || { echo "$m $ver: training failed: $(tail -1 $run.err)"; continue; }
    PYTHONPATH=$src $PY -m fewshot eval $run --dataset omniglot --split background_small2 --data-dir "$D" \
      --way 5 --shot 1 --tasks 300 --seed 0 --json 2>>$run.err \
      | $PY -c "import sys, json; d = json.load(sys.stdin); print(f'$m $ver {100*d[\"accuracy\"]:.2f} ± {100*d[\"ci95\"]:.2f}')"
  done
done
