#!/usr/bin/env bash
# Decode speed of a Qwen3-30B-A3B-shaped synthetic model run straight from GGUF (three reads per
# expert) and from its packed copy (one read per expert), alternating, each in the same memory
# cgroup (cgroup v1, needs root). Optionally llama.cpp (llama-cpp-python, mmap, no repack) on the
# same GGUF in the same cgroup: pass LLAMA_PY=/path/to/python-with-llama_cpp.
# Usage: bench/scripts/gguf_direct_vs_packed.sh [SCRATCH_DIR] [LIMIT_MIB] [CACHE_MIB] [RUNS]
set -euo pipefail
dir=${1:-/work/scratch}; limit=${2:-7300}; cache=${3:-4096}; runs=${4:-3}
floe=${FLOE:-target/release/floe}
[ -f "$dir/q30.gguf" ] || "$floe" synth --preset qwen3-30b-a3b --format gguf --out "$dir/q30.gguf"
cg=/sys/fs/cgroup/memory/floebench
mkdir -p $cg && echo $((limit * 1024 * 1024)) > $cg/memory.limit_in_bytes
echo $$ > $cg/cgroup.procs
for i in $(seq "$runs"); do
  for m in q30.gguf q30.floe; do
    "$floe" run --model "$dir/$m" --cache lru --cache-mb "$cache" --prefetch gate -n 32 --ignore-eos --json 2>/dev/null |
      python3 -c "
import json,sys; d=json.load(sys.stdin); s=d['stats']; n=s['generated_tokens']+s['prompt_tokens']
print('$m', 'decode %.2f tok/s'%s['decode_tok_s'], 'hit %.3f'%s['hit_ratio'], 'read %.2f GB/s'%s['read_gb_s'],
      'stall %.2f'%s['stall_share'], '%.1f MB read/token'%(s['bytes_read']/n/1e6), 'peak RSS %d MiB'%(s['peak_rss_bytes']>>20))"
  done
done
if [ -n "${LLAMA_PY:-}" ]; then
  python3 -c "import os; fd=os.open('$dir/q30.gguf', os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)"
  "$LLAMA_PY" - "$dir/q30.gguf" <<'PY'
import sys, time, numpy as np, llama_cpp, llama_cpp.llama as L
orig = llama_cpp.llama_model_default_params
def params():
    p = orig(); p.use_extra_bufts = False  # keep the weights in the mmap (no CPU_REPACK copies)
    return p
llama_cpp.llama_model_default_params = params; L.llama_cpp.llama_model_default_params = params
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, use_mmap=True, verbose=False,
                      type_k=0, type_v=0, logits_all=True)
ids = llm.tokenize(b"Once upon a time", add_bos=False); llm.eval(ids)
n, t0 = 8, time.time()
for _ in range(n):
    llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
print("llama.cpp (mmap, no repack, same cgroup): decode %.2f tok/s" % (n / (time.time() - t0)))
PY
fi
