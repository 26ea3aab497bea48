#!/usr/bin/env bash
# Decode on a streamed model for each --cache policy x --prefetch predictor (issue 6's table):
# tokens/s, hit ratio, GB/s read, stall share, one run each, the model file's cached pages dropped
# before each run (matters for `os`). Prints a Markdown table.
# Usage: bench/scripts/policy_table.sh MODEL_DIR CACHE_MIB [TOKENS] [POLICIES] [PREFETCHERS]
set -euo pipefail
model=$1; cache=$2; n=${3:-24}
policies=${4:-lru moe s3fifo}; prefetchers=${5:-none temporal hot gate}
floe=${FLOE:-target/release/floe}
P="It was a bright cold day in April, and the clocks were striking thirteen."
drop() { python3 -c "import os; fd=os.open('$model/experts.bin', os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)"; }
echo "| --cache | --prefetch | decode tok/s | hit ratio | read GB/s | stall share |"
echo "|---|---|---|---|---|---|"
row() {
  drop
  $floe run --model "$model" -p "$P" -n "$n" --temperature 1 --seed 1 --ignore-eos --cache "$1" \
      --cache-mb "$cache" --prefetch "$2" --json 2>/dev/null |
    python3 -c "
import json,sys; s=json.load(sys.stdin)['stats']
print('| $1 | $2 | %.2f | %.3f | %.2f | %.0f %% |' % (s['decode_tok_s'], s['hit_ratio'], s['read_gb_s'], 100*s['stall_share']))"
}
for c in $policies; do for p in $prefetchers; do row "$c" "$p"; done; done
row os gate
row none none
