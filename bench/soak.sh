#!/usr/bin/env bash
# Soak test: kill -9 a search and a compare grid at random instants, rerun, and check that every
# rerun ends exactly where an uninterrupted run ends.
#
#   bench/soak.sh [KILLS] [WORKDIR]       (default 20 kills, a new temporary folder)
#
# 1. An uninterrupted reference search and reference compare grid (tiny NB201 supernet on the
#    embedded digits, 1 torch thread).
# 2. The same search, started again and again with `kill -9` after a random 2.5-10.5 s (5-25 s for
#    the grid, whose workers start later), so kills land inside data loading, steps, checkpoint
#    writes, metric appends, worker start-up, KILLS times or until it
#    finishes; then once more to the end. Its results.json (seconds aside) and metrics.jsonl
#    (seconds aside) must equal the reference's.
# 3. The same for `dnas compare --jobs 2`: after each kill -9 of the parent no worker may survive;
#    at the end every run's results.json must equal the reference grid's.
# Prints one line per kill and a final verdict; exits non-zero on any difference.
set -euo pipefail
KILLS=${1:-20}
WORK=${2:-$(mktemp -d)}
RANDOM=20261201
mkdir -p "$WORK"
SEARCH=(search --space nb201 --epochs 450 --batch-size 16 --threads 1 --quiet channels=4 layers=1 max_images=320
        checkpoint_every=5 log_every=2)
COMPARE=(compare --space nb201 --methods darts,pr-darts --seeds 0,1 --epochs 450 --batch-size 16 --jobs 2 --threads 1
         --quiet channels=4 layers=1 max_images=160 checkpoint_every=5)

strip() {  # a JSON file or a JSON-lines file, without its "seconds" fields, one sorted object per line
  python - "$1" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
try:
    records = [json.loads(text)]
except json.JSONDecodeError:
    records = [json.loads(line) for line in text.splitlines()]
for record in records:
    print(json.dumps({k: v for k, v in record.items() if k != "seconds"}, sort_keys=True))
EOF
}

SURVIVORS=0
kill_after() {  # kill_after LOW SPAN command...: run it, kill -9 it after LOW + U(0, SPAN) s; 0 if it finished first
  local low=$1 span=$2
  shift 2
  "$@" >/dev/null 2>&1 &
  local pid=$! delay children
  delay=$(python -c "import sys; print(round($low + $span * int(sys.argv[1]) / 32767, 2))" "$RANDOM")
  sleep "$delay"
  children=$(pgrep -P "$pid" || true)
  if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    # workers notice within a second once they run (a worker still importing torch notices after
    # its imports); one alive after 30 s is an orphan
    local waited=0 alive=1
    while [ "$alive" -eq 1 ] && [ "$waited" -lt 60 ]; do
      alive=0
      for c in $children; do kill -0 "$c" 2>/dev/null && alive=1; done
      [ "$alive" -eq 1 ] && { sleep 0.5; waited=$((waited + 1)); }
    done
    SURVIVORS=0
    for c in $children; do
      if kill -0 "$c" 2>/dev/null; then SURVIVORS=$((SURVIVORS + 1)); kill -9 "$c" 2>/dev/null || true; fi
    done
    echo "killed after ${delay}s (children then: $(echo $children | wc -w), all gone after $((waited / 2)) s, survivors after 30 s: $SURVIVORS)"
    return 1
  fi
  wait "$pid" 2>/dev/null || true
  return 0
}

echo "soak in $WORK: $KILLS kills per phase; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
python -m dnas "${SEARCH[@]}" --out "$WORK/search-ref" >/dev/null
python -m dnas "${COMPARE[@]}" --out "$WORK/compare-ref" >/dev/null

failures=0
echo "== search"
for i in $(seq 1 "$KILLS"); do
  printf "search kill %2d: " "$i"
  if kill_after 2.5 8 python -m dnas "${SEARCH[@]}" --out "$WORK/search"; then echo "finished before the kill"; break; fi
  search_kills=$i
done
echo "search: ${search_kills:-0} kills landed"
python -m dnas "${SEARCH[@]}" --out "$WORK/search" >/dev/null
for f in results.json metrics.jsonl genotype.json; do
  if ! diff -q <(strip "$WORK/search-ref/$f") <(strip "$WORK/search/$f") >/dev/null; then
    echo "DIFFERENT: search $f"; failures=$((failures + 1))
  fi
done

echo "== compare --jobs 2"
for i in $(seq 1 "$KILLS"); do
  printf "compare kill %2d: " "$i"
  if kill_after 5 20 python -m dnas "${COMPARE[@]}" --out "$WORK/compare"; then echo "finished before the kill"; break; fi
  if [ "$SURVIVORS" -gt 0 ]; then failures=$((failures + 1)); fi
done
python -m dnas "${COMPARE[@]}" --out "$WORK/compare" >/dev/null
for ref in "$WORK"/compare-ref/runs/*/results.json; do
  run=$(basename "$(dirname "$ref")")
  if ! diff -q <(strip "$ref") <(strip "$WORK/compare/runs/$run/results.json") >/dev/null; then
    echo "DIFFERENT: compare run $run"; failures=$((failures + 1))
  fi
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$failures" -eq 0 ]; then
  echo "soak: PASSED (every rerun ended identical to the uninterrupted run; no orphaned worker)"
else
  echo "soak: FAILED ($failures difference(s))"; exit 1
fi
