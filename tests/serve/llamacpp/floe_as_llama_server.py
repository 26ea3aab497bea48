#!/usr/bin/env python3
"""Starts `floe serve` in place of `llama-server` for llama.cpp's own server tests
(tools/server/tests): llama-server's flags that mean the same thing are passed on under floe's
names, the model flags (`--hf-repo`, `--model`, ...) all name the synthetic model in
$FLOE_SUITE_MODEL, and flags for what floe does not have (GPU layers, batch sizes, slots
endpoints, ...) are dropped. Environment: FLOE_BIN (the floe binary), FLOE_SUITE_MODEL.
"""
import os
import sys

# llama-server flag -> floe serve flag (None: dropped, with its value when it takes one).
TAKES_VALUE = {
    "--port": "--port", "--host": "--host", "--api-key": "--api-key", "--ctx-size": "--ctx",
    "--parallel": "--parallel", "--threads": "--threads", "--alias": "--model-name",
    "--chat-template-file": "--chat-template-file", "--n-predict": "--default-max-tokens",
    "--cors-origins": "--cors-origin",
    "--temp": None, "--seed": None, "--hf-repo": None, "--hf-file": None, "--model": None,
    "--model-url": None, "--batch-size": None, "--ubatch-size": None, "--n-gpu-layers": None,
    "--pooling": None, "--reasoning-format": None, "--reasoning": None, "--chat-template": None,
    "-ctk": None, "-ctv": None, "-fa": None, "--model-draft": None, "--tags": None,
    "--slot-save-path": None, "--grp-attn-n": None, "--grp-attn-w": None, "--lora": None,
    "--spec-type": None, "--media-path": None, "--cache-ram": None, "--mmproj-url": None,
    "--models-dir": None, "--models-max": None, "--models-preset": None,
    "--sleep-idle-seconds": None, "--spec-draft-n-max": None, "--spec-draft-n-min": None,
}
FLAGS = {"--offline", "--cont-batching", "--metrics", "--kv-unified", "--swa-full", "--slots",
         "--no-slots", "--verbose", "--no-ui", "--jinja", "--no-jinja", "--no-mmproj",
         "--context-shift", "--no-models-autoload", "--no-cache-idle-slots", "--embedding",
         "--reranking"}

args = sys.argv[1:]
# llama-server answers whatever model a request names.
out = ["serve", "--model", os.environ["FLOE_SUITE_MODEL"], "--any-model"]
i = 0
while i < len(args):
    a = args[i]
    if a in TAKES_VALUE:
        if TAKES_VALUE[a] is not None:
            out += [TAKES_VALUE[a], args[i + 1]]
        i += 2
    elif a in FLAGS:
        i += 1
    else:
        print(f"floe_as_llama_server: unknown llama-server flag {a}", file=sys.stderr)
        sys.exit(2)
if "--model-name" not in out:
    out += ["--model-name", "tinyllama-2"]
os.execv(os.environ["FLOE_BIN"], [os.environ["FLOE_BIN"], *out])
