#!/usr/bin/env bash
# Decode speed per KV cache type at a depth, floe beside llama.cpp on the same weights: llama.cpp
# runs llama-bench -d DEPTH (its prompt of DEPTH tokens, then tg16, flash attention on, as its
# quantised V cache needs) on the GGUF file; floe runs the kv_decode example (the cache filled
# with DEPTH pseudo-random rows, then 16 tokens) on the packed directory of the same model.
# Types run alternately, RUNS rounds, medians and floe/llama.cpp ratios in one table.
# Usage: bench/scripts/kv_vs_llamacpp.sh LLAMA_CPP_DIR MODEL.gguf MODEL_DIR [DEPTH] [TYPES] [RUNS] [THREADS]
set -euo pipefail
llama=${1:?llama.cpp directory}; gguf=${2:?GGUF file}; dir=${3:?floe model directory}
depth=${4:-8192}; types=${5:-f16,q8_0,q4_0}; runs=${6:-1}; threads=${7:-2}
bench="$llama/build/bin/llama-bench"
example=${KV_DECODE:-target/release/examples/kv_decode}
[ -x "$bench" ] || { echo "no $bench: build llama.cpp first" >&2; exit 1; }
[ -x "$example" ] || { echo "no $example: cargo build --release -p floe-bench --examples" >&2; exit 1; }
out=$(mktemp -d)
for i in $(seq "$runs"); do
  for t in ${types//,/ }; do
    "$bench" -m "$gguf" -t "$threads" -fa on -ctk "$t" -ctv "$t" -d "$depth" -p 0 -n 16 -r 1 -o json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["avg_ts"])' >> "$out/llama_$t"
    "$example" "$dir" "$depth" "$t" 1 \
      | awk -F'|' '/^\| [0-9]/ {split($3, a, " "); print a[1]}' >> "$out/floe_$t"
  done
done
python3 - "$out" "$types" "$depth" <<'PY'
import statistics, sys
out, types, depth = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
med = lambda f: statistics.median(float(x) for x in open(f"{out}/{f}").read().split())
print(f"| KV type (depth {depth}) | floe tok/s | llama.cpp tok/s | floe / llama.cpp |")
print("|---|---|---|---|")
for t in types:
    f, l = med(f"floe_{t}"), med(f"llama_{t}")
    print(f"| {t} | {f:.2f} | {l:.2f} | {f / l:.2f}x |")
PY
