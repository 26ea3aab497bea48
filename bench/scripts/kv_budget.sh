#!/usr/bin/env bash
# A memory budget without --ctx (KV caches grow inside it, the slab cache gives way) against the
# same budget with a fixed context (--ctx 512, and the context the old rule reserved: what a
# quarter of the budget holds), each in a memory cgroup (v1, needs root) whose limit IS the
# budget, the model file's cached pages dropped before each run. A last run scores a long prompt
# (about 1,200 tokens) so the KV caches grow past their first allocations.
# Usage: bench/scripts/kv_budget.sh MODEL_DIR BUDGET_MIB [TOKENS] [ROUNDS]
set -euo pipefail
model=$1; budget=$2; n=${3:-32}; rounds=${4:-2}
floe=${FLOE:-target/release/floe}
cg=/sys/fs/cgroup/memory/floe_kv_budget
mkdir -p $cg && echo $((budget * 1024 * 1024)) > $cg/memory.limit_in_bytes
echo $$ > $cg/cgroup.procs
P="It was a bright cold day in April, and the clocks were striking thirteen."
LONG=$(python3 -c "print(' '.join(['The river runs south through farmland, past the mill and the old bridge.'] * 80))")
drop() { python3 -c "import os; fd=os.open('$model/experts.bin', os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)"; }
per_pos=$($floe run --model "$model" -p x -n 1 --memory-mb "$budget" --ctx 64 --json 2>/dev/null |
  python3 -c "import json,sys; print(json.load(sys.stdin)['stats']['kv_bytes_per_position'])")
quarter=$(( budget * 1024 * 1024 / 4 / per_pos ))
echo "budget $budget MiB = cgroup limit; $n tokens; $(lscpu | sed -n 's/^Model name: *//p')"
echo "| setting | context | slab slots (limit at the end) | decode tok/s | peak RSS MiB | cgroup peak MiB | OOM kills |"
echo "|---|---|---|---|---|---|---|"
one() { # name prompt extra...
  local name=$1 prompt=$2; shift 2
  drop
  echo 0 > $cg/memory.max_usage_in_bytes 2>/dev/null || true
  local before; before=$(sed -n 's/^oom_kill //p' $cg/memory.oom_control 2>/dev/null || echo 0)
  local out; out=$($floe run --model "$model" -p "$prompt" -n "$n" --temperature 1 --seed 1 --ignore-eos \
    --memory-mb "$budget" --json "$@" 2>/dev/null || true)
  local after; after=$(sed -n 's/^oom_kill //p' $cg/memory.oom_control 2>/dev/null || echo 0)
  local peak=$(( $(cat $cg/memory.max_usage_in_bytes) >> 20 ))
  if [ -z "$out" ]; then echo "| $name | | | failed | | $peak | $((after - before)) |"; return; fi
  echo "$out" | python3 -c "
import json,sys; s=json.load(sys.stdin)['stats']
print('| $name | %d | %d (%d) | %.2f | %d | $peak | $((after - before)) |' % (s['ctx'], s['cache_slots'], s['slot_limit'], s['decode_tok_s'], s['peak_rss_bytes'] >> 20))"
}
for r in $(seq "$rounds"); do
  one "no --ctx (KV grows in the budget)" "$P"
  one "--ctx 512" "$P" --ctx 512
  one "--ctx $quarter (a quarter of the budget, reserved)" "$P" --ctx "$quarter"
done
one "no --ctx, long prompt" "$LONG"
