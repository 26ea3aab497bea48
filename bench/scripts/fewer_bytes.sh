#!/usr/bin/env bash
# Bytes per token and speed of the knobs that read less (issue 29), one sitting, alternating:
# per cache size, the exact defaults, --experts-per-token K for K = top-k - 2 and top-k / 2,
# learned pins (a usage file learned on one prompt, measured on another), and the exact run
# with --plain-eviction --prefetch-all (prefetch-aware eviction and adaptive depth off).
# Every run writes its routing (--trace-out); `floe sim` replays it through Belady at the same
# slots, so "reads/Belady" is the run's slab reads (misses, prefetches and pins) over the
# fewest reads any policy could have made on that routing.
# Usage: bench/scripts/fewer_bytes.sh MODEL "CACHE_MIB ..." [ROUNDS] [TOKENS] [PIN_SHARE]
set -euo pipefail
model=$1; caches=$2; rounds=${3:-2}; n=${4:-48}; pin_share=${5:-90}
floe=${FLOE:-target/release/floe}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
LEARN="The history of the river begins in the hills, where the first farmers settled."
MEASURE="It was a bright cold day in April, and the clocks were striking thirteen."
top_k=$($floe run --model "$model" -p x -n 1 --cache-mb "${caches%% *}" --json 2>/dev/null |
  python3 -c "import json,sys; print(json.load(sys.stdin)['stats'].get('experts_per_token', 0))")
run() { # name cache extra...
  local name=$1 cache=$2; shift 2
  $floe run --model "$model" -p "$MEASURE" -n "$n" --temperature 1 --seed 1 --ignore-eos \
    --cache-mb "$cache" --trace-out "$work/t.jsonl" --json "$@" 2>/dev/null > "$work/r.json"
  local slots; slots=$(python3 -c "import json; print(json.load(open('$work/r.json'))['stats']['cache_slots'])")
  $floe sim --trace "$work/t.jsonl" --cache belady --phase all --capacity "$slots" --json 2>/dev/null |
    sed -n 1p > "$work/b.json"
  python3 - "$name" "$cache" "$work/r.json" "$work/b.json" <<'PY'
import json, sys
name, cache = sys.argv[1], sys.argv[2]
s = json.load(open(sys.argv[3]))['stats']; b = json.loads(open(sys.argv[4]).read())
tok = s['prompt_tokens'] + s['generated_tokens']
print(f"| {name} | {cache} | {s['decode_tok_s']:.2f} | {s['bytes_read'] / tok / 1e9:.3f} | "
      f"{s['demand_hit_ratio']:.3f} | {s['hit_ratio']:.3f} | {100 * s['stall_share']:.0f} % | "
      f"{s['slab_reads']} | {b['misses']} | {s['slab_reads'] / max(1, b['misses']):.2f}x | {s['pinned_slots']} |")
PY
}
echo "model top-k $top_k; $n tokens after a $(echo "$MEASURE" | wc -w)-word prompt; $(lscpu | sed -n 's/^Model name: *//p')"
echo "| setting | cache MiB | decode tok/s | GB read / token | demand hit | hit (with prefetch) | stall | slab reads | Belady reads | reads/Belady | pinned |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for cache in $caches; do
  # The usage file: learned on another prompt (and seed) at this cache size.
  rm -f "$work/usage.json"
  $floe run --model "$model" -p "$LEARN" -n "$n" --temperature 1 --seed 7 --ignore-eos \
    --cache-mb "$cache" --usage "$work/usage.json" --json >/dev/null 2>&1
  pin=$((cache * pin_share / 100))
  for r in $(seq "$rounds"); do
    run "exact (defaults)" "$cache"
    run "K = $((top_k - 2))" "$cache" --experts-per-token $((top_k - 2))
    run "K = $((top_k / 2))" "$cache" --experts-per-token $((top_k / 2))
    cp "$work/usage.json" "$work/u.json"
    run "pins ${pin} MiB, moe, no prefetch" "$cache" --usage "$work/u.json" --pin-mb "$pin" --cache moe --prefetch none
    cp "$work/usage.json" "$work/u.json"
    run "pins ${pin} MiB" "$cache" --usage "$work/u.json" --pin-mb "$pin"
    run "exact, plain eviction, prefetch all" "$cache" --plain-eviction --prefetch-all
  done
done
