#!/usr/bin/env bash
# Slab reads of the exact streaming settings against Belady's on the same run's routing (issue
# 29's I/O target): a usage file is learned on LEARN other prompts first, then each setting runs
# one measured prompt with a copy of it and writes its routing (--trace-out); `floe sim` replays
# that routing through Belady at the run's slots. "reads" counts demand misses, prefetches and
# pinned slabs; "demand" only the misses the engine waited for.
# Usage: bench/scripts/reads_vs_belady.sh MODEL CACHE_MIB [TOKENS] [LEARN] [PIN_SHARE]
set -euo pipefail
model=$1; cache=$2; n=${3:-64}; learn=${4:-4}; pin_share=${5:-90}
floe=${FLOE:-target/release/floe}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PROMPTS=(
  "The history of the river begins in the hills, where the first farmers settled."
  "A recipe for bread: mix flour, water, salt and yeast, then knead the dough well."
  "The committee met on Tuesday to discuss the budget for the coming year and its risks."
  "In the beginning the universe was created. This has made a lot of people very angry."
)
MEASURE="It was a bright cold day in April, and the clocks were striking thirteen."
for p in "${PROMPTS[@]:0:$learn}"; do
  $floe run --model "$model" -p "$p" -n "$n" --temperature 1 --seed 7 --ignore-eos \
    --cache-mb "$cache" --usage "$work/usage.json" --json >/dev/null 2>&1
done
pin=$((cache * pin_share / 100))
echo "$(lscpu | sed -n 's/^Model name: *//p'); $n tokens; usage learned on $learn other prompts"
echo "| setting | slab reads | demand misses | Belady | reads / Belady | demand / Belady | prefetches (wasted) | pinned |"
echo "|---|---|---|---|---|---|---|---|"
run() { # name extra...
  local name=$1; shift
  cp "$work/usage.json" "$work/u.json"
  $floe run --model "$model" -p "$MEASURE" -n "$n" --temperature 1 --seed 1 --ignore-eos \
    --cache-mb "$cache" --trace-out "$work/t.jsonl" --json "$@" 2>/dev/null > "$work/r.json"
  local slots; slots=$(python3 -c "import json; print(json.load(open('$work/r.json'))['stats']['cache_slots'])")
  $floe sim --trace "$work/t.jsonl" --cache belady --phase all --capacity "$slots" --json 2>/dev/null |
    sed -n 1p > "$work/b.json"
  python3 - "$name" "$work/r.json" "$work/b.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))['stats']; b = json.loads(open(sys.argv[3]).read())['misses']
print(f"| {sys.argv[1]} | {s['slab_reads']} | {s['misses']} | {b} | {s['slab_reads'] / b:.3f}x | "
      f"{s['misses'] / b:.3f} | {s['prefetch_issued']} ({s['prefetch_wasted']}) | {s['pinned_slots']} |")
PY
}
run "moe, no usage file, no prefetch" --cache moe --prefetch none
run "moe from the usage file, no prefetch" --cache moe --prefetch none --usage "$work/u.json"
run "moe from the usage file, prefetch precision >= 0.95" --cache moe --prefetch-min-precision 0.95 --usage "$work/u.json"
run "moe from the usage file, pins ${pin} MiB, no prefetch" --cache moe --prefetch none --usage "$work/u.json" --pin-mb "$pin"
