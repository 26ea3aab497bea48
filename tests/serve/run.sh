#!/usr/bin/env bash
# Starts `floe serve` on loopback with a small synthetic model (word-piece vocabulary) and runs
# tests/serve/openai_client.py against it: the official openai package, 8 concurrent clients,
# the error cases, structured output, a load test and the chat page in headless Chromium; then
# tests/serve/tools_client.py with three families' chat templates and
# tests/serve/anthropic_client.py (the Messages API). Installs the openai, langchain-openai and
# anthropic packages (pip) and Chromium (apt, as root) when missing. Usage: tests/serve/run.sh [FLOE_BINARY]
set -euo pipefail
cd "$(dirname "$0")/../.."
FLOE=${1:-target/debug/floe}
[ -x "$FLOE" ] || cargo build -q -p floe-cli
if ! python3 -c "import openai, langchain_openai, anthropic" 2>/dev/null; then
  python3 -m pip install -q openai langchain-openai anthropic 2>/dev/null ||
    python3 -m pip install -q --break-system-packages openai langchain-openai anthropic
fi
if ! command -v chromium >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
# Starts `floe serve` with the given flags, logging to $work/LOG; sets $pid and $url.
serve() {
  local log="$work/$1"
  shift
  "$FLOE" serve --model "$work/model" --port 0 "$@" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    grep -q "listening on" "$log" && break
    sleep 0.1
  done
  url=$(grep -o "http://[0-9.:]*" "$log" | head -1)
  [ -n "$url" ] || { cat "$log"; exit 1; }
}
"$FLOE" synth --preset tiny --vocab 1024 --dtype q4_0 --seed 5 --out "$work/model" >/dev/null
# Streamed through a slab cache of a quarter of the experts, so batching shares real reads.
serve log --cache lru --ctx 512
python3 tests/serve/openai_client.py "$FLOE" "$work/model" "$url" "$pid"
kill "$pid"

# Tool calls with the real chat templates of three families (Qwen3, gpt-oss, DeepSeek-V3.1).
for tpl in Qwen-Qwen3-0.6B openai-gpt-oss-120b deepseek-ai-DeepSeek-V3.1; do
  serve "log-$tpl" --ctx 2048 --chat-template-file "tests/fixtures/templates/$tpl.jinja"
  python3 tests/serve/tools_client.py "$url" "$tpl"
  kill "$pid"
done
echo "all tool-call checks passed"

# Anthropic's Messages API, with a key (sent as x-api-key by the anthropic package).
serve log-messages --ctx 2048 --api-key ci-key \
  --chat-template-file tests/fixtures/templates/Qwen-Qwen3-0.6B.jinja
python3 tests/serve/anthropic_client.py "$url" ci-key
kill "$pid"
echo "all Messages API checks passed"
