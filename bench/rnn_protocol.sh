#!/usr/bin/env bash
# The recurrent-space protocol on Penn Treebank, on one CPU core: DARTS' RNN search with a reduced
# model and step budget, chosen by pilots of plain DARTS before any remedy ran at it; then DARTS and
# the three remedies that report on PTB (lambda-darts, darts-prime, amended-darts) on seeds 0-2; the
# derived cells (and DARTS_V2_RNN, for scale) retrained at one small fixed budget; every run reported.
#
#     bench/rnn_protocol.sh pilot      # plain DARTS, seed 0, the two candidate budgets (below); the rule picks one
#     bench/rnn_protocol.sh search     # the four presets x seeds 0-2 at the pilot's choice
#     bench/rnn_protocol.sh retrain    # every derived cell and DARTS_V2_RNN at the retraining budget
#     bench/rnn_protocol.sh report     # bench/rnn_report.py: $OUT/rnn/report.md
#     bench/rnn_protocol.sh all        # the four, in order
#
# Runs go to $OUT/rnn (default runs/rnn), one `dnas search` / `dnas train` at a time, --threads 1.
# Running a part again reuses finished runs and resumes interrupted ones. PTB: $DNAS_SHARED_DATA/ptb
# (default ../shared/data/ptb beside the checkout), the standard ptb.{train,valid,test}.txt.
#
# ---------------------------------------------------------------------------------------------
# The budget (the same for every preset; each keeps its own method, only these are set)
#   model     hidden_size=32 (embedding = hidden, tied decoder over the 10,000 words); Lambda-DARTS keeps
#             its two stacked cells (layers=2) at the same width; every dropout, clip 0.25 and TAR as the
#             preset; w_lr=5 (w_lr_min=5: constant, as the preset's 20), see the trial below
#   data      w on the first max_tokens training tokens, alpha on the whole validation split (as DARTS)
#   search    4 epochs; the supernet's validation perplexity every epoch (eval batch 64)
#             candidate b64: batch 64, max_tokens=64,000 -> 30 steps per epoch (~120 steps)
#             candidate b16: batch 16, max_tokens=33,600 -> 60 steps per epoch (~240 steps), the same CPU time
#   retrain   hidden_size=64, the first 134,400 training tokens, 2 epochs (~120 steps), batch 64,
#             everything else the darts-ptb preset (lr 20, dropouts, TAR, clip 0.25); valid and test
#             perplexity on the full splits with 64 streams (DARTS: 10 and 1); seed 0 for every cell
# Why: cost per step is Python overhead of the 35-step unrolled cell and the 10,000-word softmax, not
# the cell's arithmetic. Measured (one thread, 2-core machine under load average ~7 from other work):
# 1.3 s per darts step at hidden 32 / batch 64 / BPTT 35 (darts-2nd 4.5 s, amended-darts 6.6 s,
# lambda-darts ~3 s once its lambda is on, darts-prime ~0.6 s), about half at batch 16; 0.7 s per
# retraining step at hidden 32 or 64; ~8-10 s per evaluation of the validation or test split at batch
# 64 (at batch 1 the test split alone would take minutes). In 30-step trials of the weights alone, lr 20
# with clip 0.25 moves every width slowly (the clipped step of norm 5 is shared by the 10,000 embedding
# rows and the decoder bias) and clip 1 or 2 diverged, so the budget buys steps, not width.
# The weight learning rate (a trial before the pilots, darts with its alpha steps, hidden 32, batch 64,
# the first 64,000 tokens, 70 steps): at the preset's lr 20 the search model's training loss rose from
# 9.28 to 10.82, above the uniform 9.21 (embedding norm 13 -> 21), while at lr 5 it fell to 8.17; the
# evaluation model (no BatchNorm, no mixing) at hidden 64 learns stably at lr 20 (8.67 -> 6.94 in 60
# steps; 7.06 at lr 5), so retraining keeps the preset's lr 20 and the search uses 5.
#
# The pilot rule, fixed before any pilot ran: plain darts, seed 0, a_lr 3e-3 (the preset's), both
# candidates. Criteria: (1) the supernet learns beyond word frequencies: final validation perplexity
# below 687, the unigram perplexity of PTB's validation split under the training split's counts;
# (2) DARTS decides: final margin (strongest minus second-strongest non-none op, mean over the 36
# edges) >= 0.03, the project's "undecided" threshold. The budget is the candidate meeting both (both:
# the lower perplexity; neither meets (1): the lower perplexity, reported as such). If the chosen
# candidate does not decide, it runs again at 10x (a_lr 3e-2, as the CNN protocol scaled its alpha
# learning rate) and that is the budget, decided or not (reported).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
part="${1:-all}"
out="${OUT:-runs}/rnn"
python="${PYTHON:-python}"
ptb="${DNAS_SHARED_DATA:-$here/../../shared/data}/ptb"
if [[ ! -f "$ptb/ptb.train.txt" && ! -f "$ptb/train.txt" ]]; then
    echo "rnn_protocol: no Penn Treebank at $ptb; set DNAS_SHARED_DATA to the folder holding ptb/" >&2
    exit 2
fi

seeds=(0 1 2)
methods=(darts lambda-darts darts-prime amended-darts)
common=(--dataset "$ptb" --epochs 4 --threads 1 --quiet)
declare -A batch=([b64]=64 [b16]=16) tokens=([b64]=64000 [b16]=33600)
search_common=(hidden_size=32 eval_batch_size=64 w_lr=5 w_lr_min=5)
train_budget=(--dataset "$ptb" --epochs 2 --batch-size 64 --seed 0 --threads 1 --quiet)
train_common=(hidden_size=64 max_tokens=134400 eval_batch_size=64 test_batch_size=64)
UNIGRAM_PPL=687  # exp(-mean log p(valid token)), p the training split's word frequencies

search() {  # search METHOD SEED BUDGET A_LR
    local dir="$out/search-$3-alr$4/$1-s$2"
    if [[ -f "$dir/results.json" ]]; then return; fi
    echo "== $(date -u +%FT%TZ) search $1 seed $2 budget $3 a_lr $4 ($(uptime | sed 's/.*load/load/'))"
    /usr/bin/time -f "   %e s wall, %U s user" "$python" -m dnas search --space rnn --method "$1" --seed "$2" \
        "${common[@]}" --batch-size "${batch[$3]}" --out "$dir" "${search_common[@]}" "max_tokens=${tokens[$3]}" \
        "a_lr=$4"
}

field() {  # field RUN_DIR KEY: margin or valid_ppl of a finished search
    "$python" -c "import json,sys; r=json.load(open(sys.argv[1])); v=r[sys.argv[2]];
print(v['recurrent'] if isinstance(v, dict) else v)" "$1/results.json" "$2"
}

pilot() {
    search darts 0 b64 3e-3
    search darts 0 b16 3e-3
    local best
    best="$("$python" - "$out" "$UNIGRAM_PPL" <<'PY'
import json, sys
out, unigram = sys.argv[1], float(sys.argv[2])
runs = {b: json.load(open(f"{out}/search-{b}-alr3e-3/darts-s0/results.json")) for b in ("b64", "b16")}
ok = {b: r["valid_ppl"] < unigram and r["margin"]["recurrent"] >= 0.03 for b, r in runs.items()}
pool = [b for b in runs if ok[b]] or list(runs)
print(min(pool, key=lambda b: runs[b]["valid_ppl"]))
for b, r in runs.items():
    print(f"pilot {b}: valid ppl {r['valid_ppl']:.1f}, margin {r['margin']['recurrent']:.4f}, both criteria: {ok[b]}",
          file=sys.stderr)
PY
)"
    local alr=3e-3
    if ! "$python" -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 0.03 else 1)" \
            "$(field "$out/search-$best-alr3e-3/darts-s0" margin)"; then
        alr=3e-2
        search darts 0 "$best" "$alr"
    fi
    echo "$best $alr" > "$out/pilot-choice"
    echo "pilot: chosen budget $best, a_lr $alr"
}

chosen() {
    if [[ ! -f "$out/pilot-choice" ]]; then pilot >&2; fi
    cat "$out/pilot-choice"
}

searches() {
    local budget alr
    read -r budget alr < <(chosen)
    for seed in "${seeds[@]}"; do
        for method in "${methods[@]}"; do
            search "$method" "$seed" "$budget" "$alr"
        done
    done
}

train() {  # train GENOTYPE NAME
    local dir="$out/train/$2"
    if [[ -f "$dir/result.json" ]]; then return; fi
    echo "== $(date -u +%FT%TZ) retrain $2 ($(uptime | sed 's/.*load/load/'))"
    /usr/bin/time -f "   %e s wall, %U s user" "$python" -m dnas train "$1" "${train_budget[@]}" --out "$dir" \
        "${train_common[@]}"
}

retrains() {
    local budget alr
    read -r budget alr < <(chosen)
    train DARTS_V2_RNN darts_v2_rnn
    for seed in "${seeds[@]}"; do
        for method in "${methods[@]}"; do
            train "$out/search-$budget-alr$alr/$method-s$seed" "$method-s$seed"
        done
    done
}

report() {
    local budget alr
    read -r budget alr < <(chosen)
    "$python" "$here/rnn_report.py" "$out" --budget "$budget" --a-lr "$alr" --out "$out/report.md"
    cat "$out/report.md"
}

mkdir -p "$out"
case "$part" in
    pilot) pilot ;;
    search) searches ;;
    retrain) retrains ;;
    report) report ;;
    all) pilot; searches; retrains; report ;;
    *) echo "rnn_protocol: unknown part '$part'; give pilot, search, retrain, report or all" >&2; exit 2 ;;
esac
