#!/usr/bin/env bash
# Streaming decode of one GGUF file under one memory budget: floe run in place (direct reads into
# its slab cache, --memory-mb counting dense weights, KV and cache) against llama.cpp's
# llama-bench (mmap: the page cache holds the experts; --repack 0 keeps them in the mapping),
# alternating, each in the same memory cgroup (v1, needs root), the file's cached pages dropped
# before every run.
# Usage: bench/scripts/streaming_vs_llamacpp.sh LLAMA_BIN_DIR FILE.gguf [LIMIT_MIB] [RUNS] [TOKENS]
set -euo pipefail
bin=$1; model=$2; limit=${3:-6144}; runs=${4:-3}; n=${5:-32}
floe=${FLOE:-target/release/floe}
cg=/sys/fs/cgroup/memory/floe_vs_llamacpp
mkdir -p $cg && echo $((limit * 1024 * 1024)) > $cg/memory.limit_in_bytes
echo $$ > $cg/cgroup.procs
P="It was a bright cold day in April, and the clocks were striking thirteen."
drop() { python3 -c "import os; fd=os.open('$model', os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)"; }
for i in $(seq "$runs"); do
  drop
  $floe run --model "$model" -p "$P" -n "$n" --temperature 1 --seed 1 --ignore-eos --cache lru \
      --memory-mb $((limit - 200)) --ctx 256 --prefetch gate --threads 2 --json 2>/dev/null |
    python3 -c "
import json,sys; d=json.load(sys.stdin); s=d['stats']; n=s['generated_tokens']
print('floe run %d:'%$i, 'decode %.2f tok/s'%s['decode_tok_s'], 'hit %.3f'%s['hit_ratio'],
      'read %.2f GB/s'%s['read_gb_s'], 'stall %.2f'%s['stall_share'], 'cache %d slots'%s['cache_slots'],
      'state %d MiB (recurrent %d MiB)'%(s['kv_bytes']>>20, s['recurrent_bytes']>>20), 'peak RSS %d MiB'%(s['peak_rss_bytes']>>20))"
  drop
  LD_LIBRARY_PATH=$bin "$bin/llama-bench" -m "$model" -t 2 -p 0 -n "$n" -r 1 --load-mode mmap --repack 0 -o json 2>/dev/null |
    python3 -c "
import json,sys; r=json.load(sys.stdin)[0]
print('llama.cpp run %d:'%$i, 'decode %.2f tok/s'%r['avg_ts'], '(llama-bench tg$n, mmap, no repack, same cgroup)')" ||
    echo "llama.cpp run $i: failed (killed by the cgroup?)"
done
