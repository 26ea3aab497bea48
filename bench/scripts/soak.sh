#!/usr/bin/env bash
# Soak: 10,000 streamed decode tokens on the demo model (written on first use, as `floe run`
# does), peak RSS sampled every 1,000 tokens; the last line says whether every peak stays within
# 2 % of the peak at 1,000 tokens.
#   bench/scripts/soak.sh [TOTAL_TOKENS] [PER_GENERATION]
set -euo pipefail
cd "$(dirname "$0")/../.."
total=${1:-10000}
per_gen=${2:-500}
cargo build --release -q -p floe-cli --bin floe && cargo build --release -q -p floe --example soak
# `floe run -n 1` writes the demo model if it is missing (where demo_dir() in cli/run.rs says).
./target/release/floe run -n 1 >/dev/null
demo="${FLOE_CACHE_DIR:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/floe}}"
demo="${demo:-$HOME/.cache/floe}/demo-v1-words"
echo "soak: $total tokens in generations of $per_gen on $demo"
./target/release/examples/soak "$demo" "$total" "$per_gen"
