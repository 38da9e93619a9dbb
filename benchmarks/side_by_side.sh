#!/usr/bin/env bash
# Side by side: an earlier commit (OLD, a checkout) and this checkout, alternating, in one process tree.
#   git worktree add --detach /tmp/old 15779ce
#   WITH_STORE=1 OLD=/tmp/old NEW=$PWD OUT=/tmp/bench bash benchmarks/side_by_side.sh
# Results: one JSON per benchmark, side and round in $OUT; compare ratios within a round.
set -u
PY=${PYTHON:-python}
OLD=${OLD:?set OLD to a checkout of the earlier commit}
NEW=${NEW:-$PWD}
OUT=${OUT:-/tmp/bench}; mkdir -p "$OUT"
Z=${DATA:-$NEW/../shared/data/omniglot}
for round in 1 2; do
  for side in old new; do
    root=$OLD; [ $side = new ] && root=$NEW
    cd $root
    echo "== round $round $side load $(cut -d' ' -f1-3 /proc/loadavg)"
    PYTHONPATH=$root FEWSHOT_NO_PROGRESS=1 timeout 600 $PY benchmarks/embed_throughput.py --data $Z/images_background.zip --n 1000 --batch 64 --repeats 3 --json $OUT/embed_${side}_$round.json > $OUT/embed_${side}_$round.log 2>&1
    PYTHONPATH=$root FEWSHOT_NO_PROGRESS=1 timeout 600 $PY benchmarks/sequence_throughput.py --data $Z/strokes_background_small1.zip --n 800 --batch-size 128 --repeats 3 --threads 1 --out $OUT/seq_${side}_$round.json > $OUT/seq_${side}_$round.log 2>&1
    [ -n "${WITH_STORE:-}" ] && PYTHONPATH=$root timeout 600 $PY benchmarks/classify_scale.py --classes 100 10000 --json $OUT/classify_${side}_$round.json > $OUT/classify_${side}_$round.log 2>&1
    [ -n "${WITH_STORE:-}" ] && PYTHONPATH=$root timeout 600 $PY benchmarks/add_latency.py --smoke --workdir $(mktemp -d)/w --json $OUT/add_${side}_$round.json > $OUT/add_${side}_$round.log 2>&1
  done
done
echo "== end load $(cut -d' ' -f1-3 /proc/loadavg)"
