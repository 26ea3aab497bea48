#!/usr/bin/env bash
# What fewer experts per token cost on every golden family: `floe kld` (mean and p99 KL
# divergence of the next-token distribution against the exact top-k, top-1 agreement) for
# K = top-k - 1, top-k - 2, top-k / 2 and 1, and for minimum expert weights 0.1 to 0.5,
# with the mean experts each setting ran per token and layer.
# The golden models are tiny with random weights: their distributions are flatter than a
# trained model's, so these figures show the mechanism, not a real model's quality.
# Usage: bench/scripts/expert_count_quality.sh [FLOE] [GOLDEN_DIR]
set -euo pipefail
FLOE=${1:-target/release/floe}
GOLDEN=${2:-../shared/golden}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '| family | top-k | setting | experts run | mean KL | p99 KL | top-1 agreement |\n|---|---|---|---|---|---|---|\n'
for fam in qwen3_moe qwen3_5_moe qwen2_moe mixtral olmoe glm4_moe deepseek_v2 deepseek_v3 gpt_oss; do
  dir=$GOLDEN/$fam
  if [ -f "$dir/model-F32.gguf" ]; then
    model=$dir/model-F32.gguf
  else
    model=$work/$fam
    "$FLOE" pack --from "$dir" --out "$model" --dtype f32 >/dev/null 2>&1
  fi
  k=$(python3 -c "import json;c=json.load(open('$dir/config.json'));c=c.get('text_config',c);print(c.get('num_experts_per_tok') or c.get('moe_topk') or c['experts_per_token'])")
  ks=$(python3 -c "k=$k;print(','.join(str(x) for x in sorted({max(1,k-1),max(1,k-2),max(1,k//2),1},reverse=True)))")
  "$FLOE" kld --model "$model" --experts-per-token "$ks" --min-expert-weight 0.1,0.2,0.3,0.5 --json 2>/dev/null |
    python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l)
    s='K = %d'%d['experts_per_token'] if d['min_expert_weight']==0 else 'min weight %.1f'%d['min_expert_weight']
    print('| $fam | %d | %s | %.2f | %.4f | %.4f | %.1f %% |'%(d['model_top_k'],s,d['mean_experts'],d['mean_kl'],d['p99_kl'],100*d['top1_agreement']))"
done
