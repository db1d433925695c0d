#!/usr/bin/env bash
# The runs behind docs/sine-phase/results.jsonl: sine_phase with the small tier's training (1200 Adam steps,
# p = 2000, early stopping) on a wider grid than the small tier's: m = 4..64, k = 2, 4, 8, b = 1, 2,
# n = 250..16000, three seeds, every (m, k, b) with k b <= m. Each command resumes (stored runs are skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODSCALE=${MODSCALE:-.venv/bin/modscale}
OUT=docs/sine-phase
N="n=250,1000,4000,16000"
run() { $MODSCALE run sine_phase --tier small --seeds 3 --out $OUT --set "$@" $N; }
run m=4,8,16,32,64 k=2,4 b=1
run m=8,16,32,64 k=8 b=1
run m=4,8,16,32,64 k=2 b=2
run m=8,16,32,64 k=4 b=2
run m=16,32,64 k=8 b=2
$MODSCALE plot $OUT --formats png
