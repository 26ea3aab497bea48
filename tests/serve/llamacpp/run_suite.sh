#!/usr/bin/env bash
# Runs llama.cpp's own server tests (tools/server/tests, pytest) against `floe serve`: its
# ServerProcess starts floe_as_llama_server.py in place of llama-server, on a synthetic model.
# Runs the `not slow` tests of test_chat_completion.py, test_security.py and test_tool_call.py,
# except those in excluded.txt (each with its reason), and fails if any other fails.
# Usage: tests/serve/llamacpp/run_suite.sh LLAMA_CPP_SRC [FLOE_BINARY]
#   LLAMA_CPP_SRC: llama.cpp's source tree (e.g. the llama-cpp-python sdist's vendor/llama.cpp).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$1" && pwd)
cd "$here/../../.."
FLOE=$(realpath "${2:-target/release/floe}")
[ -x "$FLOE" ] || cargo build --release -q -p floe-cli
python3 -c "import pytest, filelock, requests, openai, prometheus_client, wget" 2>/dev/null ||
  python3 -m pip install -q pytest filelock requests openai prometheus-client wget 2>/dev/null ||
  python3 -m pip install -q --break-system-packages pytest filelock requests openai prometheus-client wget
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The tests find templates at ../../../models/templates from their own directory.
mkdir -p "$work/tools/server" "$work/models"
cp -r "$src/tools/server/tests" "$work/tools/server/"
cp -r "$src/models/templates" "$work/models/"
"$FLOE" synth --preset tiny --out "$work/model" >/dev/null
deselect=()
while read -r line; do
  case "$line" in '' | '#'*) continue ;; esac
  deselect+=(--deselect "$line")
done <"$here/excluded.txt"
cd "$work/tools/server/tests"
FLOE_BIN="$FLOE" FLOE_SUITE_MODEL="$work/model" LLAMA_SERVER_BIN_PATH="$here/floe_as_llama_server.py" \
  python3 -m pytest -q -p no:cacheprovider -m "not slow" \
  unit/test_chat_completion.py unit/test_security.py unit/test_tool_call.py "${deselect[@]}"
