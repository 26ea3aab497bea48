#!/usr/bin/env bash
# Decode against the roofline 1 / max(io_time, compute_time) (issue 6): io_time = bytes read per
# decode token / the bandwidth `floe bench-io` measures for the model's slab size; compute_time =
# the same run's decode time per token minus its stall per token. Two runs (-n 8 and -n 40) with
# the same prompt and seed; their difference is 32 decode tokens without prefill.
# MODEL is a packed directory or a GGUF file (run in place; bench-io then reads the file itself).
# Usage: bench/scripts/roofline.sh MODEL CACHE_MIB [CACHE] [PREFETCH]
set -euo pipefail
model=$1; cache=$2; policy=${3:-lru}; prefetch=${4:-gate}
floe=${FLOE:-target/release/floe}
if [[ $model == *.gguf ]]; then file=$model; else file=$model/experts.bin; fi
P="It was a bright cold day in April, and the clocks were striking thirteen."
run() { $floe run --model "$model" -p "$P" -n "$1" --temperature 1 --seed 1 --ignore-eos --cache "$policy" \
          --cache-mb "$cache" --prefetch "$prefetch" --json 2>/dev/null; }
a=$(run 8); b=$(run 40)
slab=$(echo "$b" | python3 -c "import json,sys; print(json.load(sys.stdin)['stats']['slot_bytes'])")
# Read at most the file itself (bench-io refuses to grow an existing file).
size=$(python3 -c "import os; print(min(15 << 30, os.path.getsize('$file')))")
bw=$($floe bench-io --file "$file" --size "$size" --slab "$slab" --qd 16 --io uring --json 2>/dev/null |
  python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['gb_per_s'])")
python3 - "$bw" "$a" "$b" <<'PY'
import json, sys
bw = float(sys.argv[1]); a = json.loads(sys.argv[2])['stats']; b = json.loads(sys.argv[3])['stats']
n = b['generated_tokens'] - a['generated_tokens']
t = (b['prefill_s'] + b['decode_s'] - a['prefill_s'] - a['decode_s']) / n
by = (b['bytes_read'] - a['bytes_read']) / n
st = (b['stall_s'] - a['stall_s']) / n
io, comp = by / 1e9 / bw, t - st
roof = 1 / max(io, comp)
print(f"bench-io {bw:.2f} GB/s; per decode token: {t:.3f} s, {by/1e9:.3f} GB read, stall {st:.3f} s "
      f"({100*st/t:.0f} %); io_time {io:.3f} s, compute_time {comp:.3f} s; roofline {roof:.2f} tok/s, "
      f"measured {1/t:.2f} tok/s = {100/t/roof:.0f} % of the roofline; hit ratio {b['hit_ratio']:.3f}")
PY
