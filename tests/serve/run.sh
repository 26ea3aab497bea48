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
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$FLOE" synth --preset tiny --vocab 1024 --dtype q4_0 --seed 5 --out "$work/model" >/dev/null
# Streamed through a slab cache of a quarter of the experts, so batching shares real reads.
"$FLOE" serve --model "$work/model" --port 0 --cache lru --ctx 512 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/log" && break
  sleep 0.1
done
url=$(grep -o "http://[0-9.:]*" "$work/log" | head -1)
[ -n "$url" ] || { cat "$work/log"; exit 1; }
python3 tests/serve/openai_client.py "$FLOE" "$work/model" "$url" "$pid"

# Tool calls with the real chat templates of three families (Qwen3, gpt-oss, DeepSeek-V3.1).
for tpl in Qwen-Qwen3-0.6B openai-gpt-oss-120b deepseek-ai-DeepSeek-V3.1; do
  "$FLOE" serve --model "$work/model" --port 0 --ctx 2048 \
    --chat-template-file "tests/fixtures/templates/$tpl.jinja" >"$work/log-$tpl" 2>&1 &
  tpid=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$work/log-$tpl" && break
    sleep 0.1
  done
  turl=$(grep -o "http://[0-9.:]*" "$work/log-$tpl" | head -1)
  [ -n "$turl" ] || { cat "$work/log-$tpl"; exit 1; }
  python3 tests/serve/tools_client.py "$turl" "$tpl" || { kill "$tpid"; exit 1; }
  kill "$tpid"
done
echo "all tool-call checks passed"

# Anthropic's Messages API, with a key (sent as x-api-key by the anthropic package).
"$FLOE" serve --model "$work/model" --port 0 --ctx 2048 --api-key ci-key \
  --chat-template-file tests/fixtures/templates/Qwen-Qwen3-0.6B.jinja >"$work/log-messages" 2>&1 &
mpid=$!
for _ in $(seq 100); do
  grep -q "listening on" "$work/log-messages" && break
  sleep 0.1
done
murl=$(grep -o "http://[0-9.:]*" "$work/log-messages" | head -1)
[ -n "$murl" ] || { cat "$work/log-messages"; exit 1; }
python3 tests/serve/anthropic_client.py "$murl" ci-key || { kill "$mpid"; exit 1; }
kill "$mpid"
echo "all Messages API checks passed"
