#!/usr/bin/env bash
# The collapse protocol: CPU budgets at which plain DARTS decides and collapses, chosen by pilots of
# DARTS alone before any remedy ran at them; then every remedy at the same budget, every run reported.
#
#     bench/collapse_protocol.sh core          # 5 presets x 3 seeds on NB201 + the same 5 on S2 (seed 0)
#     bench/collapse_protocol.sh full          # core + darts-2nd, pr-darts-code, darts-prime-v1, two combinations
#                                              # and the runs that explain failures, on NB201 (3 seeds)
#     bench/collapse_protocol.sh sweep         # lambda-darts with lam=1 (4x) and 2.5 (10x) on NB201, 3 seeds
#     bench/collapse_protocol.sh s2-seeds      # darts on S2 with seeds 1 and 2 as well
#     bench/collapse_protocol.sh ten           # NB201, 8-pixel proxy: every preset, two combinations and the
#                                              # baselines, seeds 0-9
#     bench/collapse_protocol.sh pilot16       # the 16-pixel proxy's pilots: plain darts, seeds 0-1 (rule below)
#     bench/collapse_protocol.sh proxy16       # darts and every remedy preset at the pilots' choice, seeds 0-4
#     bench/collapse_protocol.sh pilot-s2      # S2 at RobustDARTS' depth and epochs: plain darts, seeds 0-1 (2) (rule below)
#     bench/collapse_protocol.sh precision     # darts in bf16, and in float32 under 2 threads, seeds 0-9: do
#                                              # they decide as ten's float32 darts (1 thread)? (needs ten's darts)
#     bench/collapse_protocol.sh report        # only rewrite $OUT/collapse.md and $OUT/evidence (with proxy16/ and
#                                              # ranking.md, the two proxies' rankings compared) from the runs so far
#     bench/collapse_protocol.sh docs          # report, then copy the tables, CSVs and plots to docs/compare and
#                                              # docs/evidence
#     OUT=/somewhere bench/collapse_protocol.sh ten --jobs 1      # extra `dnas compare` options
#
# Outputs: the three-seed grids $OUT/collapse-nb201, $OUT/collapse-s2 and $OUT/sweep-lambda with their
# per-method table $OUT/collapse.md (bench/collapse_report.py: peak vs final accuracy, collapsed runs, skip
# and parameter-free counts per epoch, margins, Hessian eigenvalue trend, gradient alignment, time); the
# ten-seed grid $OUT/ten-nb201, a `dnas compare` folder (report.md, per_run.csv, curves.csv, index.html,
# per-run directories) and $OUT/evidence (bench/evidence_report.py: per-entry statistics over the
# seeds, paired comparisons against darts, the collapse guards replayed). Running a part again
# resumes it: finished runs are reused, interrupted ones continue.
#
# ---------------------------------------------------------------------------------------------
# The 8-pixel NB201 budget (every entry gets the same; presets keep their own methods, only the step
# budget and the alpha learning rate are set here)
#   data      CIFAR-10 train images (JPEG zip), class-balanced subset max_images=2500 at
#             image_size=8, split 50/50 into the w and alpha halves (darts-prime: its 10/11)
#   supernet  channels=4, layers=1 (one cell per stage)
#   search    30 epochs, batch 32 -> 39 iterations per epoch, 1,170 weight steps (and alpha steps
#             for the alternating methods)
#   alpha lr  10x every preset's own: a_lr=3e-3 (lambda-darts: 1e-3, its preset 1e-4)
#   logging   hessian_every=2 (dominant eigenvalue of grad^2_alpha L_val on a fixed batch, as often
#             as RobustDARTS' early stopping reads it), alignment_every=10
#   machine   --threads 1, runs one or two at a time (--jobs)
#
# Why this budget: measurements (plain first-order `darts`, seeds 0-2, before any remedy was run
# at it; 2-core machine shared with 3 other engineers, load average ~4).
#
# 1. Cost per step is overhead, not arithmetic. Seconds per search iteration (one thread, epoch 2-3
#    of 3, darts on NB201, C / pixels / batch / images):
#        C8 16px b64 5000: 0.36 (epoch 2 of the issue's trial budget, killed there)
#        C8  8px b64 5000: 0.27      C4 16px b32 2500: 0.27
#        C8 16px b32 2500: 0.21      C4  8px b32 2500: 0.16
#    Shrinking the tensors 16x only halves the step time, so the budget buys steps with the
#    smallest tensors (C4, 8 px, batch 32) and spends them on epochs.
# 2. The alpha learning rate. At the old protocol's a_lr 3e-4 with 468 steps no preset decided
#    (docs/collapse-protocol.md, margins 0.0002-0.004). Two pilots at the budget above, 30 epochs (1,170 steps):
#        pilot A, a_lr 3e-3 (10x):
#          seed 0  final margin 0.135  cifar10-test peak 87.47 at epoch 5, all-skip (36.84) at
#                  epoch 11, final 73.11 with 4 skips (4 parameter-free edges)
#          seed 1  final margin 0.120  peak 87.45 at epoch 13, final 87.45 (3 skips)
#          seed 2  final margin 0.291  peak 85.18 at epoch 2, from epoch 19 on a cell with `none`
#                  on 4 edges and no path to the output: 10.00 (4 parameter-free edges)
#        pilot B, a_lr 1e-2 (33x):
#          seed 0  final margin 0.234  peak 85.30 at epoch 2, all-skip at epoch 11, then back
#                  to 80.11 (1 skip) as the weight learning rate anneals
#          seed 1  final margin 0.372  peak 86.40 at epoch 6, final 69.08 (3 skips, 5 parameter-free)
#          seed 2  final margin 0.291  peak 85.84 at epoch 6, final 79.78 (2 skips, 3 parameter-free)
#    Both decide on every seed (margins 0.12-0.37, four to twelve times the 0.03 threshold) and
#    in both the accuracy falls after an early peak on most seeds. A ends collapsed (>= 4 of 6
#    edges parameter-free, >= 5 points below its own peak) on 2 seeds of 3, B on 1 of 3 (B's
#    larger steps also reverse the collapse when the weights settle); A is also the 10x scaling
#    of the issue's trial and, in total alpha movement (a_lr x steps = 3.5), the closest of the
#    two to the papers' 3e-4 x 19,550 = 5.9 without overshooting it. Hence A.
# The 16-pixel proxy (pilot16, proxy16), closer to the papers' search (C=16, 32x32, 25,000 images):
#   data      the same CIFAR-10 zip, max_images=5000 at image_size=16, split 50/50
#   supernet  channels=8, layers=1
#   search    30 epochs, batch 32 -> 78 iterations per epoch, 2,340 steps; logging as above
#   alpha lr  2.5e-3 for every preset (lambda-darts: its 10x-of-preset 1e-3, as above): a_lr x steps
#             = 5.85, the papers' total alpha movement (3e-4 x 19,550 = 5.9) without overshooting it
# The rule, fixed before any pilot ran: plain darts on seeds 0 and 1 at a_lr 2.5e-3. If DARTS decides
# on both (final margin >= 0.03), that is the budget; else the pilots run again at a_lr 1e-2 and that
# is the budget, decided or not (reported as such). Whether DARTS collapses there is a result, not a
# criterion. No remedy runs at this budget before the pilots have chosen (pilot16 writes
# $OUT/proxy16-choice, proxy16 reads it).
#
# 3. S2 (RobustDARTS: {skip_connect, sep_conv_3x3} on every edge of the DARTS cell) is the space
#    built to make DARTS fail through skip connections; layers=5 gives 3 normal cells (Lambda-
#    DARTS aligns the normal cells, so it needs more than one) and 2 reductions. 0.29 s per
#    iteration (1.8x NB201's). No benchmark table exists for it: collapse there is read from the
#    skip count of the derived cells.
# 4. A collapsing budget on the DARTS-cell spaces (pilot-s2). At the 5-cell, 30-epoch S2 budget above,
#    DARTS' normal cells kept sep_conv_3x3 on 6-8 of 8 edges on seeds 0-2 (no collapse). RobustDARTS
#    reports DARTS' collapse on S2 at its search setting: 8 cells, 50 epochs. Pilot budget, fixed before
#    any pilot ran:
#      S2, layers=8 (6 normal cells, 2 reductions), 50 epochs, batch 32 (1,950 steps), the 8-pixel
#      data and width (C=4, 2,500 images), a_lr 3e-3, hessian_every=5
#    Rule: plain darts on seeds 0 and 1; a run collapses when its final normal cell has >= 5 of its 8
#    edges parameter-free (a majority). Both collapse: that is the budget. One does: seed 2 decides
#    (2 of 3). Neither: the budget fails (2 of 3 is out of reach) and is reported as such, with the
#    seconds per iteration at RobustDARTS' full setting (C=16, 32x32, batch 64) for the cost of a
#    search there. The pilots write $OUT/s2-choice ("yes" or "no"); no remedy runs before it says yes.
# 5. hessian_every=2 (RobustDARTS measures every 2 epochs, which its early-stopping rule reads):
#    one eigenvalue estimate costs ~3 s (power iteration on a batch of 32), fifteen per run.
#
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_shared_data.sh"
part="${1:-ten}"
shift || true
out="${OUT:-runs}"
python="${PYTHON:-python}"

seeds=${SEEDS:-0,1,2,3,4,5,6,7,8,9}  # SEEDS=0,1,2 bench/collapse_protocol.sh precision: fewer
budget=(--dataset "$dataset" --epochs 30 --batch-size 32 --jobs 1 --threads 1 --quiet)  # keep --threads 1 --quiet last
common=(channels=4 image_size=8 max_images=2500 a_lr=3e-3 hessian_every=2 alignment_every=10)
# the three-seed grids (core, full, sweep, s2-seeds) read the eigenvalue every 5 epochs and run two at a time
budget3=(--dataset "$dataset" --epochs 30 --batch-size 32 --seeds 0,1,2 --jobs 2 --threads 1 --quiet)
common3=(channels=4 image_size=8 max_images=2500 a_lr=3e-3 hessian_every=5 alignment_every=10)
core=(--methods darts,pr-darts,darts-prime,amended-darts --entry lambda-darts:lambda-darts:a_lr=1e-3)  # NB201
core_s2=(--methods darts,pr-darts,lambda-darts,darts-prime,amended-darts  # lambda-darts' a_lr is 3e-4 here
         --entry amended-fd:amended-darts:estimator.hvp=fd)  # Amended-DARTS with finite-difference products
# the other presets and two combinations, then the runs that explain failures: Amended-DARTS' curvature term by
# finite differences (the public implementation's) and with a 10x smaller radius, and plain DARTS with the alpha
# step first (Amended-DARTS' order on NB201) to separate the step order from the correction; costliest first
extra=(--entry lambda-amended:lambda-darts:a_lr=1e-3,estimator=amended,estimator.hvp=fd
       --entry amended-fd:amended-darts:estimator.hvp=fd
       --entry darts-2nd:darts-2nd
       --entry amended-r1e-3:amended-darts:estimator.hvp=fd,estimator.fd_radius=1e-3
       --entry pr-lambda:pr-darts:weight_regularizers=lambda
       --entry darts-prime-v1:darts-prime-v1 --entry pr-darts-code:pr-darts-code
       --entry darts-arch-first:darts:schedule.order=arch-first
       --entry prime-v1-alternate:darts-prime-v1:schedule=alternate  # v1 with an alpha step every iteration
       --entry darts-bf16:darts:precision=bf16)  # the forward passes in bfloat16
presets=(--methods darts,darts-2nd,amended-darts,pr-darts,pr-darts-code,darts-prime,darts-prime-v1,gdas,sdarts-rs,sdarts-adv,fair-darts,darts-minus,drnas
         --entry lambda-darts:lambda-darts:a_lr=1e-3
         --entry lambda-amended:lambda-darts:a_lr=1e-3,estimator=amended,estimator.hvp=fd
         --entry pr-lambda:pr-darts:weight_regularizers=lambda)
# beta-DARTS' coefficient ramps over the 30 epochs as the official code's over its 100; PC-DARTS trains the
# weights alone for the first 9 of the 30 epochs as the official code for 15 of its 50; DARTS-'s coefficient
# decays over the search's epochs by itself and DrNAS' stages scale to them (--methods entries)
baselines=(--entry beta-darts:beta-darts:arch_regularizers.beta-decay.ramp_epochs=30
           --entry pc-darts:pc-darts:warmup_epochs=9)

nb201() { "$python" -m dnas compare --space nb201 --table "$table" "${budget3[@]}" \
              --out "$out/collapse-nb201" "$@" "${common3[@]}" layers=1; }
s2() { "$python" -m dnas compare --space s2 "${budget3[@]}" --seeds 0 \
           --out "$out/collapse-s2" "$@" "${common3[@]}" layers=5; }
grid() { "$python" -m dnas compare --space nb201 --table "$table" "${budget[@]}" --seeds "$seeds" \
             --out "$out/ten-nb201" "$@" "${common[@]}" layers=1; }
precision() {  # darts-bf16 and darts under 2 threads, each paired with ten's float32 darts of the same seed
    "$python" -m dnas compare --space nb201 --table "$table" "${budget[@]}" --seeds "$seeds" --out "$out/precision-nb201" \
        --methods '' --entry darts-bf16:darts:precision=bf16 "$@" "${common[@]}" layers=1
    local two=("${budget[@]}")
    two[${#two[@]}-2]=2  # --threads 2 (budget ends with --threads 1 --quiet)
    "$python" -m dnas compare --space nb201 --table "$table" "${two[@]}" --seeds "$seeds" \
        --out "$out/threads2-nb201" --methods darts "$@" "${common[@]}" layers=1
    local pairs=() seed
    for seed in ${seeds//,/ }; do
        pairs+=("$out/ten-nb201/runs/darts-s$seed" "$out/threads2-nb201/runs/darts-s$seed")
    done
    echo "== float32, 2 threads against float32, 1 thread"
    "$python" "$here/decision_agreement.py" "${pairs[@]}"
    pairs=()
    for seed in ${seeds//,/ }; do
        pairs+=("$out/ten-nb201/runs/darts-s$seed" "$out/precision-nb201/runs/darts-bf16-s$seed")
    done
    echo "== bf16 against float32, 1 thread"
    "$python" "$here/decision_agreement.py" "${pairs[@]}"
}
budget16=(--dataset "$dataset" --epochs 30 --batch-size 32 --jobs 1 --threads 1 --quiet)
common16=(channels=8 image_size=16 max_images=5000 hessian_every=2 alignment_every=10)
pilot16() {
    local alr=2.5e-3 decided
    for alr in 2.5e-3 1e-2; do
        "$python" -m dnas compare --space nb201 --table "$table" "${budget16[@]}" --seeds 0,1 --methods '' \
            --entry "darts-alr$alr:darts:a_lr=$alr" --out "$out/pilot16-nb201" "$@" "${common16[@]}" layers=1
        decided=$("$python" - "$out/pilot16-nb201/runs" "$alr" <<'PY'
import json, sys
runs, alr = sys.argv[1], sys.argv[2]
margins = [min(json.load(open(f"{runs}/darts-alr{alr}-s{s}/results.json"))["margin"].values()) for s in (0, 1)]
print(f"pilot16 a_lr {alr}: final margins {margins[0]:.4f}, {margins[1]:.4f}", file=sys.stderr)
print("yes" if min(margins) >= 0.03 else "no")
PY
)
        if [[ "$decided" == yes ]]; then break; fi
    done
    echo "$alr" > "$out/proxy16-choice"
    echo "pilot16: a_lr $alr ($([[ $decided == yes ]] && echo decided || echo 'not decided even at 1e-2'))"
}
proxy16() {
    [[ -f "$out/proxy16-choice" ]] || pilot16 "$@"
    local alr
    alr=$(cat "$out/proxy16-choice")
    "$python" -m dnas compare --space nb201 --table "$table" "${budget16[@]}" --seeds 0,1,2,3,4 \
        --methods darts,darts-2nd,amended-darts,pr-darts,pr-darts-code,darts-prime,darts-prime-v1 \
        --entry lambda-darts:lambda-darts:a_lr=1e-3 --out "$out/proxy16-nb201" "$@" "${common16[@]}" "a_lr=$alr" layers=1
}
budget_s2=(--dataset "$dataset" --epochs 50 --batch-size 32 --jobs 1 --threads 1 --quiet)
common_s2=(channels=4 image_size=8 max_images=2500 a_lr=3e-3 hessian_every=5 alignment_every=10 layers=8)
pilot_s2() {
    local grid="$out/pilot-s2" seeds=0,1 verdict
    "$python" -m dnas compare --space s2 "${budget_s2[@]}" --seeds "$seeds" --methods darts --out "$grid" "$@" \
        "${common_s2[@]}"
    verdict=$(collapsed_s2 "$grid" 0 1)
    if [[ "$verdict" == "1" ]]; then
        "$python" -m dnas compare --space s2 "${budget_s2[@]}" --seeds 0,1,2 --methods darts --out "$grid" "$@" \
            "${common_s2[@]}"
        verdict=$(collapsed_s2 "$grid" 0 1 2)
    fi
    if (( verdict >= 2 )); then echo yes > "$out/s2-choice"; else echo no > "$out/s2-choice"; cost_s2; fi
    echo "pilot-s2: $verdict collapsed; budget $(cat "$out/s2-choice")"
}
cost_s2() {  # seconds per darts iteration on S2 at RobustDARTS' search setting, one thread, and a 50-epoch search's
    PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$python" - <<'PY'
import statistics, torch
from _common import search_at_last_epoch, time_calls
torch.set_num_threads(1)
with search_at_last_epoch("s2", "darts", channels=16, layers=8, batch_size=64, image_size=32) as search:
    times = time_calls(search.iterate, warmup=1, repeats=3)
steps = 25_000 // 64 * 50  # half of CIFAR-10's training images for the weights, batch 64, 50 epochs
median = statistics.median(times)
print(f"pilot-s2: S2 at C=16, 8 cells, 32x32, batch 64, one thread: {median:.2f} s per iteration "
      f"(spread {min(times):.2f}-{max(times):.2f}); {steps} iterations = {median * steps / 3600:.1f} h per search")
PY
}
collapsed_s2() {  # GRID SEED...: how many of the seeds' darts runs end with >= 5 of 8 normal edges parameter-free
    "$python" - "$@" <<'PY'
import json, sys
from dnas.spaces.base import PARAMETER_FREE_OPS
grid, seeds = sys.argv[1], sys.argv[2:]
count = 0
for seed in seeds:
    normal = json.load(open(f"{grid}/runs/darts-s{seed}/results.json"))["genotype"]["normal"]
    free = sum(op in PARAMETER_FREE_OPS for op, _ in normal)
    print(f"pilot-s2 darts seed {seed}: {free} of {len(normal)} normal edges parameter-free", file=sys.stderr)
    count += free >= 5
print(count)
PY
}
report() {
    local grids=() g
    for g in collapse-nb201 collapse-s2 sweep-lambda pilot-s2; do [[ -d "$out/$g" ]] && grids+=("$out/$g"); done
    if (( ${#grids[@]} )); then "$python" "$here/collapse_report.py" "${grids[@]}" --out "$out/collapse.md"; fi
    if [[ -d "$out/ten-nb201" ]]; then
        "$python" "$here/evidence_report.py" "$out/ten-nb201" --table "$table" --out "$out/evidence"
    fi
    if [[ -d "$out/proxy16-nb201" && -d "$out/evidence" ]]; then
        "$python" "$here/evidence_report.py" "$out/proxy16-nb201" --table "$table" --out "$out/evidence/proxy16"
        "$python" "$here/proxy_ranking.py" "$out/evidence" "$out/evidence/proxy16" --names "8 px" "16 px" \
            --out "$out/evidence/ranking.md"
    fi
}
docs() {
    local dest="$here/../docs/compare" grid
    if [[ -f "$out/collapse.md" && -d "$out/collapse-nb201" ]]; then  # collapse.md reports the three-seed grids
        mkdir -p "$dest"
        cp "$out/collapse.md" "$out"/*_curves.png "$dest/"
    fi
    for grid in collapse-nb201 collapse-s2 pilot-s2; do
        [[ -d "$out/$grid" ]] || continue
        mkdir -p "$dest/${grid#collapse-}"
        cp "$out/$grid"/{report.md,summary.csv,per_run.csv,curves.csv} "$out/$grid"/*.png "$dest/${grid#collapse-}/"
        # the report names the dataset by this machine's path: name it by the data folder's variable instead
        sed -i "s|$data/|\$DNAS_SHARED_DATA/|g" "$dest/${grid#collapse-}/report.md"
    done
    if [[ -d "$out/evidence" ]]; then mkdir -p "$here/../docs/evidence"; cp -r "$out/evidence/." "$here/../docs/evidence/"; fi
}

case "$part" in
    core) nb201 "${core[@]}" "$@"; s2 "${core_s2[@]}" "$@"; report ;;
    full) nb201 "${core[@]}" "$@"; s2 "${core_s2[@]}" "$@"; nb201 "${core[@]}" "${extra[@]}" "$@"; report ;;
    sweep) "$python" -m dnas compare --space nb201 --table "$table" "${budget3[@]}" --methods '' \
               --entry lambda-darts-lam1:lambda-darts:a_lr=1e-3,weight_regularizers.lambda.lam=1.0 \
               --entry lambda-darts-lam2.5:lambda-darts:a_lr=1e-3,weight_regularizers.lambda.lam=2.5 \
               --out "$out/sweep-lambda" "$@" "${common3[@]}" layers=1
           report ;;
    s2-seeds) s2 --methods darts --seeds 1,2 "$@"; s2 "${core_s2[@]}" "$@"; report ;;
    ten) grid "${presets[@]}" "${baselines[@]}" "$@"; report ;;
    pilot16) pilot16 "$@" ;;
    proxy16) proxy16 "$@" ;;
    precision) precision "$@" ;;
    pilot-s2) pilot_s2 "$@" ;;
    report) report ;;
    docs) report; docs ;;
    *) echo "collapse_protocol: unknown part '$part'; give core, full, sweep, s2-seeds, ten, pilot16, proxy16, pilot-s2," \
            "precision, report or docs" >&2
       exit 2 ;;
esac
