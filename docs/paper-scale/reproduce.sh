#!/usr/bin/env bash
# The commands that produced docs/paper-scale/results.jsonl: the paper tier wherever a 2-core CPU can run
# it, or a stated subset of a paper tier run in full, in the order they were run. Every step resumes (runs
# already stored are skipped), so this script can be stopped and started again at any point.
# `make paper-scale` runs it; `modscale run NAME --tier paper --plan --out docs/paper-scale` shows what a
# step has left and how long it should take on this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODSCALE=${MODSCALE:-.venv/bin/modscale}
OUT=docs/paper-scale

# 1. Compositional CIFAR-10 at the paper's data sizes (50,000 training composites, 10,000 test), one
#    epoch, the paper's three methods and the true-slot control, k = 1, 2, 4, three seeds.
$MODSCALE run cifar_accuracy_vs_k --tier paper --set k=1,2,4 --seeds 3 --out $OUT

# 2. Every theory experiment's paper tier (closed forms and their Monte-Carlo check).
$MODSCALE run theory_loss_trends --tier paper --out $OUT
$MODSCALE run theory_samples_vs_m --tier paper --out $OUT
$MODSCALE run theory_check --tier paper --out $OUT

# 3. Sine task: samples needed n*(eps) vs m from whole learning curves (revision 2 of the experiment; the
#    36 revision-1 runs of an earlier protocol stay in results.jsonl as stale and are left out of every
#    figure). Stated subsets of the paper tier, three seeds, every eps of the tier from one curve per seed:
#    (a) the closed forms (random features, lazy) at p = 2,500, n = 8..10,000, the three scaling methods,
#        m = 2..12 (the tier's p = 10,000 rows solve 10,000 x 10,000 systems: not run on a 2-core CPU);
#    (b) rich (Adam) training at the paper's p = 10,000, n = 8..100,000: the monolith at m = 2..12, the
#        modular networks on the true and on the rule's projections at m = 2, 4, 7, 9, 12.
$MODSCALE run sine_sample_complexity --tier paper --out $OUT --jobs 2 \
    --set regime=random-features,lazy p=2500 n_max=10000 n_points=14
$MODSCALE run sine_sample_complexity --tier paper --out $OUT --jobs 2 --keep-going \
    --set regime=rich method=monolithic p=10000 n_max=100000 n_points=16
$MODSCALE run sine_sample_complexity --tier paper --out $OUT --jobs 2 --keep-going \
    --set regime=rich method=modular-oracle m=2,4,7,9,12 p=10000 n_max=100000 n_points=16
$MODSCALE run sine_sample_complexity --tier paper --out $OUT --jobs 2 --keep-going \
    --set regime=rich method=modular-kernel m=2,4,7,9,12 p=10000 n_max=100000 n_points=16

# 4. CIFAR at k = 4: accuracy vs n (the paper tier's n grid), three seeds.
$MODSCALE run cifar_n_sweep --tier paper --seeds 3 --out $OUT

# 5. CIFAR at k = 4 after 1 and 2 epochs (the paper tier's grid also has 5 and 10), and k = 8 (the paper's
#    largest k), three seeds.
$MODSCALE run cifar_epochs --tier paper --set epochs=1,2 --seeds 3 --out $OUT
$MODSCALE run cifar_accuracy_vs_k --tier paper --set k=8 --seeds 3 --out $OUT

# 6. Stated subsets of two more sine paper tiers, three seeds: loss trends along m (monolithic and modular)
#    and along k, each at three of the tier's p; the nonlinear task at m = 8, k = 4, n up to 10,000;
#    alignment at m = 16, k = 4, n = 1000 (the rule's default strategy against random starts); the OOD
#    split at m = 16, k = 4, n = 3000; mismatch at m = 8, k = 4 with K = 2, 4, 8 modules, n = 3000; the
#    rule's kernels at m = 16, k = 4, n = 1000.
$MODSCALE run sine_loss_trends --tier paper --seeds 3 --out $OUT \
    --set panel=m model=monolithic,modular m=2,3,4,5,6,7,8,9 k=4 n=1000 p=400,2000,10000
$MODSCALE run sine_loss_trends --tier paper --seeds 3 --out $OUT \
    --set panel=k model=monolithic k=2,3,4,5,6,7,8,9 m=4 n=1000 p=400,2000,10000
# Why the MLP's loss rises with k at fixed n (samples, capacity or steps?): the MLP and the modular network
# on the true projections at k = 2, 4, 8 and n = 1000, 4000, 16,000 (p = 2000), and the MLP at n = 1000 with
# twice the steps.
$MODSCALE run sine_loss_trends --tier paper --seeds 3 --out $OUT --jobs 2 \
    --set panel=k model=monolithic,modular k=2,4,8 m=4 n=1000,4000,16000 p=2000
$MODSCALE run sine_loss_trends --tier paper --seeds 3 --out $OUT --jobs 2 \
    --set panel=k model=monolithic k=2,4,8 m=4 n=1000 p=2000 steps=40000
# The p panel at n = 1000 and the n panel at p = 1000, for m = 2, 5, 8.
$MODSCALE run sine_loss_trends --tier paper --seeds 3 --out $OUT --jobs 2 --set panel=p model=monolithic \
    k=4 m=2,5,8 n=1000 p=100,178,316,562,1000,1778,3162,5623,10000,17783,31623
$MODSCALE run sine_loss_trends --tier paper --seeds 3 --out $OUT --jobs 2 --set panel=n model=monolithic \
    k=4 m=2,5,8 p=1000 n=100,178,316,562,1000,1778,3162,5623,10000,17783,31623,56234,100000
$MODSCALE run sine_nonlinear --tier paper --seeds 3 --out $OUT --set m=8 k=4 n=300,1000,3000,10000
$MODSCALE run sine_alignment --tier paper --seeds 3 --out $OUT \
    --set m=16 k=4 n=1000 strategy=deflation init=spectral
$MODSCALE run sine_ood --tier paper --seeds 3 --out $OUT --set m=16 k=4 n=3000
$MODSCALE run sine_mismatch --tier paper --seeds 3 --out $OUT --set m=8 K=2,4,8 n=3000
$MODSCALE run sine_kernels --tier paper --seeds 3 --out $OUT \
    --set m=16 k=4 n=1000 strategy=deflation init=spectral

# 7. The other sine experiments' paper tiers with three seeds (paper tier: ten; eight for double descent).
#    Double descent's ran in full; the rest price at 7-41 hours each on a 2-core CPU (see --plan).
for name in double_descent sine_alignment sine_ood sine_nonlinear sine_mismatch sine_kernels \
            sine_loss_trends; do
    $MODSCALE run $name --tier paper --seeds 3 --out $OUT
done

# Figures and the report, pure functions of the stored runs.
$MODSCALE plot $OUT --formats png
$MODSCALE report $OUT
