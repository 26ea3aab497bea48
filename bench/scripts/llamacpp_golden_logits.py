#!/usr/bin/env python3
"""llama.cpp's own outputs on the llama.cpp-converted golden GGUFs (../shared/golden/*/model-F32.gguf),
for floe's test `llama_cpp_converted_gguf_matches_llama_cpp`: prompt logits at every position (raw
little-endian f32, [T, V]) and 16 greedy tokens, written to tests/fixtures/llamacpp/.

Needs llama-cpp-python's package source and a built libllama (the runtime issue's build):
  PYTHONPATH=/path/to/llama_cpp_python-0.3.36 \
  LLAMA_CPP_LIB_PATH=/path/to/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin \
  python3 bench/scripts/llamacpp_golden_logits.py ../shared/golden tests/fixtures/llamacpp qwen3_5_moe glm4_moe
"""
import json
import sys

import numpy as np
import llama_cpp

golden, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
for name in names:
    meta = json.load(open(f"{golden}/{name}/golden.json"))
    ids = meta["input_ids"]
    llm = llama_cpp.Llama(model_path=f"{golden}/{name}/model-F32.gguf", n_ctx=256, n_threads=2,
                          logits_all=True, verbose=False, type_k=0, type_v=0)  # f32 KV cache
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype="<f4")
    gen = []
    for _ in range(16):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        gen.append(tok)
        llm.eval([tok])
    logits.tofile(f"{out}/{name}-F32.logits.f32")
    info = {"gguf": f"{name}/model-F32.gguf", "llama_cpp": "0c1e570 (llama-cpp-python 0.3.36)",
            "prompt_tokens": len(ids), "vocab": logits.shape[1], "gen_ids": gen}
    json.dump(info, open(f"{out}/{name}-F32.json", "w"), indent=1)
    print(name, logits.shape, "greedy", gen, "golden greedy", meta["gen_ids"], "equal:", gen == meta["gen_ids"])
