#!/usr/bin/env bash
# Slab reads of the exact streaming settings against Belady's on the same run's routing (issue
# 29's I/O target): a usage file is learned on LEARN other prompts first, then each setting runs
# one measured prompt with a copy of it and writes its routing (--trace-out); `floe sim` replays
# that routing through Belady at the run's slots. "reads" counts demand misses, prefetches and
# pinned slabs; "demand" only the misses the engine waited for. LEARN is at most 16.
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
  "The train left the station at dawn, carrying mail, timber and a few sleepy passengers."
  "To install the package, download the archive, unpack it and run the setup script."
  "She opened the letter slowly, afraid of what the doctor had written to her family."
  "The market fell sharply on Monday after the central bank raised interest rates again."
  "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in leaves."
  "Our team won the final match in extra time, and the whole town celebrated all night."
  "The old castle on the hill was built in the twelfth century to guard the valley road."
  "Please write a short poem about the sea, the wind and the lighthouse keeper's dog."
  "The function returns an error when the input file is empty or cannot be opened."
  "Winter came early that year, and the lake froze before the geese had flown south."
  "He argued that the new law would help small farmers but hurt the larger exporters."
  "The museum's new exhibition shows paintings, maps and letters from the gold rush."
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
