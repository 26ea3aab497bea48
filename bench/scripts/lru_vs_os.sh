#!/usr/bin/env bash
# floe's slab cache against the page cache at the same memory: `--cache lru` (direct reads into
# floe's slab cache) and `--cache os` (buffered reads, the page cache does the caching), each in
# the same memory cgroup (v1, needs root), the model file's cached pages dropped before each run.
# Usage: bench/scripts/lru_vs_os.sh MODEL_DIR [LIMIT_MIB] [TOKENS] [RUNS] [PREFETCH]
set -euo pipefail
model=$1; limit=${2:-8192}; n=${3:-24}; runs=${4:-2}; prefetch=${5:-gate}
floe=${FLOE:-target/release/floe}
cg=/sys/fs/cgroup/memory/floe_lru_vs_os
mkdir -p $cg && echo $((limit * 1024 * 1024)) > $cg/memory.limit_in_bytes
echo $$ > $cg/cgroup.procs
P="It was a bright cold day in April, and the clocks were striking thirteen."
drop() { python3 -c "import os; fd=os.open('$model/experts.bin', os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)"; }
for i in $(seq "$runs"); do
  for mode in "--cache os" "--cache lru --memory-mb $((limit - 300))"; do
    drop
    $floe run --model "$model" -p "$P" -n "$n" --temperature 1 --seed 1 --ignore-eos $mode --prefetch "$prefetch" --json 2>/dev/null |
      python3 -c "
import json,sys; d=json.load(sys.stdin); s=d['stats']
print('$mode'.split()[1], 'decode %.2f tok/s'%s['decode_tok_s'], 'hit %.3f'%s['hit_ratio'], 'read %.2f GB/s'%s['read_gb_s'],
      'stall %.2f'%s['stall_share'], 'peak RSS %d MiB'%(s['peak_rss_bytes']>>20))"
  done
done
