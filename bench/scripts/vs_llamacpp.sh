#!/usr/bin/env bash
# floe against llama.cpp on the same GGUF file, fully resident, same thread count, runs
# alternating (floe, llama.cpp, floe, ...): decode and prefill of a 512-token prompt, medians
# and ratios in one table.
#   floe decode: the marginal rate between `-n 8` and `-n 40` (load and prefill cancel out);
#   floe prefill: prefill_tok_s of a 512-token prompt; llama.cpp: llama-bench tg32 and pp512.
# Usage: bench/scripts/vs_llamacpp.sh LLAMA_CPP_DIR MODEL.gguf [RUNS] [THREADS]
# LLAMA_CPP_DIR holds build/bin/llama-bench (see the runtime section of the README for the build).
set -euo pipefail
llama=${1:?llama.cpp directory}; model=${2:?GGUF file}; runs=${3:-3}; threads=${4:-2}
floe=${FLOE:-target/release/floe}
bench="$llama/build/bin/llama-bench"
[ -x "$bench" ] || { echo "no $bench: build llama.cpp first" >&2; exit 1; }
out=$(mktemp -d)
# A prompt of exactly 512 tokens for this model's tokenizer.
prompt=$(python3 - "$floe" "$model" <<'PY'
import subprocess, sys
floe, model = sys.argv[1], sys.argv[2]
def count(text):
    r = subprocess.run([floe, "tokenize", "--model", model, "--count", "-p", text],
                       capture_output=True, text=True, check=True)
    return int(r.stdout)
words = "the history of the mixture of experts architecture begins with committee machines ".split()
text, i = "", 0
while True:
    nxt = (text + " " + words[i % len(words)]).strip()
    if count(nxt) > 512:
        break
    text, i = nxt, i + 1
while count(text) < 512:
    text += "."
print(text)
PY
)
echo "prompt: $("$floe" tokenize --model "$model" --count -p "$prompt") tokens"
floe_json() { "$floe" run --model "$model" --threads "$threads" --ignore-eos --json "$@" 2>/dev/null; }
for i in $(seq "$runs"); do
  a=$(floe_json -p "Once upon a time" -n 8 | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["decode_s"])')
  b=$(floe_json -p "Once upon a time" -n 40 | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["decode_s"])')
  echo "$a $b" | python3 -c 'import sys; a,b=map(float,sys.stdin.read().split()); print(32/(b-a))' >> "$out/floe_tg"
  floe_json -p "$prompt" -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["prefill_tok_s"])' >> "$out/floe_pp"
  "$bench" -m "$model" -t "$threads" -p 512 -n 32 -r 1 -o json 2>/dev/null > "$out/ll.json"
  python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for r in json.load(open(out + "/ll.json")):
    name = "ll_pp" if r["n_prompt"] > 0 else "ll_tg"
    open(f"{out}/{name}", "a").write(f"{r['avg_ts']}\n")
PY
  echo "run $i: floe tg $(tail -1 "$out/floe_tg") pp $(tail -1 "$out/floe_pp"); llama.cpp tg $(tail -1 "$out/ll_tg") pp $(tail -1 "$out/ll_pp")"
done
python3 - "$out" "$model" "$threads" <<'PY'
import statistics, sys
out, model, threads = sys.argv[1:]
v = {k: [float(x) for x in open(f"{out}/{k}")] for k in ["floe_tg", "floe_pp", "ll_tg", "ll_pp"]}
m = {k: statistics.median(x) for k, x in v.items()}
print(f"\n{model}, resident, {threads} threads, medians of {len(v['floe_tg'])} alternating runs\n")
print("| | floe tok/s | llama.cpp tok/s | floe / llama.cpp |")
print("|---|---|---|---|")
print(f"| decode (llama-bench tg32; floe -n 40 minus -n 8) | {m['floe_tg']:.2f} | {m['ll_tg']:.2f} | {m['floe_tg']/m['ll_tg']:.2f}x |")
print(f"| prefill, 512-token prompt (pp512) | {m['floe_pp']:.2f} | {m['ll_pp']:.2f} | {m['floe_pp']/m['ll_pp']:.2f}x |")
print("\nall runs:", {k: [round(x, 2) for x in xs] for k, xs in v.items()})
PY
