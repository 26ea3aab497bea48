#!/usr/bin/env python3
"""llama.cpp's own outputs on GGUF files of the `qwen3_moe_k256` golden quantised to every
type (`tests/fixtures/iquant/model-<TYPE>.gguf`), for floe's test
`every_quant_type_matches_llama_cpp`: the prompt logits at every position (raw little-endian
f32 [T, V]), the experts llama.cpp picked at every layer, prompt position and decode step, with the gap
between its k-th and (k+1)-th router logit there (captured from its `ffn_moe_topk-<layer>`
and `ffn_moe_logits-<layer>` tensors through the eval callback), 16 greedy tokens and the logits
that chose each (`.gen_logits.f32`, [16, V]; row 0 is the last prompt row). KV cache F32,
flash attention off, 2 threads, the prompt as one batch.

Needs llama-cpp-python's package source and a built libllama (the README's runtime build):
  PYTHONPATH=/path/to/llama_cpp_python-0.3.36 \\
  LLAMA_CPP_LIB_PATH=/path/to/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin \\
  python3 bench/scripts/llamacpp_quant_logits.py ../shared/golden/qwen3_moe_k256 tests/fixtures/iquant IQ2_XXS ...

The files themselves: `floe pack --from ../shared/golden/qwen3_moe_k256 --dtype f32 --dense-dtype
f32` and `floe export` give an F32 GGUF; `llama-imatrix -c 128 --chunks 20` over 3000 words of
English gives the importance matrix; `llama-quantize --imatrix ... <TYPE>` each file.
"""
import ctypes
import json
import os
import sys

import numpy as np
import llama_cpp as L

golden, out, types = sys.argv[1], sys.argv[2], sys.argv[3:]
ids = json.load(open(f"{golden}/golden.json"))["input_ids"]
ggml = ctypes.CDLL(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libggml-base.so"))
ggml.ggml_get_name.restype = ctypes.c_char_p
ggml.ggml_get_name.argtypes = [ctypes.c_void_p]
ggml.ggml_nbytes.restype = ctypes.c_size_t
ggml.ggml_nbytes.argtypes = [ctypes.c_void_p]
ggml.ggml_get_data.restype = ctypes.c_void_p
ggml.ggml_get_data.argtypes = [ctypes.c_void_p]

L.llama_backend_init()
for ty in types:
    path = f"{out}/model-{ty}.gguf"
    topk, gaps = {}, {}

    @L.ggml_backend_sched_eval_callback
    def cb(t, ask, _user):
        name = ggml.ggml_get_name(t).decode()
        if name.startswith("ffn_moe_logits-"):
            if not ask:
                ne = (ctypes.c_int64 * 4).from_address(t + 16)
                n = ne[0] * ne[1]
                vals = np.frombuffer((ctypes.c_char * (4 * n)).from_address(ggml.ggml_get_data(t)), dtype="<f4")
                # The k-th and (k+1)-th largest router logits: how close the choice was.
                srt = -np.sort(-vals.reshape(ne[1], ne[0]), axis=1)
                gaps.setdefault(int(name.split("-")[1]), []).append(srt)
            return True
        if not name.startswith("ffn_moe_topk-"):
            return False
        if not ask:
            # struct ggml_tensor { type; buffer; int64_t ne[4]; size_t nb[4]; ... }: the top-k
            # is a strided view ([k, T] with rows of the whole argsort).
            ne = (ctypes.c_int64 * 4).from_address(t + 16)
            nb = (ctypes.c_size_t * 4).from_address(t + 48)
            base = ggml.ggml_get_data(t)
            rows = [np.frombuffer((ctypes.c_char * (4 * ne[0])).from_address(base + r * nb[1]), dtype="<i4").copy()
                    for r in range(ne[1])]
            topk.setdefault(int(name.split("-")[1]), []).append(np.stack(rows))
        return True

    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), mp)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = 128, 128, 128
    cp.n_threads = cp.n_threads_batch = 2
    cp.type_k = cp.type_v = 0  # F32 KV cache
    cp.flash_attn_type = 0  # off
    cp.cb_eval = cb
    ctx = L.llama_init_from_model(model, cp)
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    batch = L.llama_batch_init(len(ids), 0, 1)
    for i, tok in enumerate(ids):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, 1
    batch.n_tokens = len(ids)
    assert L.llama_decode(ctx, batch) == 0
    logits = np.stack([np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(vocab,)).copy()
                       for i in range(len(ids))]).astype("<f4")
    # Per layer: the experts of every prompt position then every decode step, and the gap
    # between the k-th and (k+1)-th router logit there.
    experts, router_gap = {}, {}

    def collect():
        for layer, chunks in sorted(topk.items()):
            k = chunks[0].shape[1]
            for c, g in zip(chunks, gaps[layer]):
                experts.setdefault(layer, []).extend(np.sort(c, axis=1).tolist())
                router_gap.setdefault(layer, []).extend((g[:, k - 1] - g[:, k]).tolist())
        topk.clear()
        gaps.clear()

    collect()
    assert all(len(v) == len(ids) for v in experts.values())
    gen, last, gen_logits = [], logits[-1], []
    one = L.llama_batch_init(1, 0, 1)
    for step in range(16):
        tok = int(np.argmax(last))
        gen.append(tok)
        gen_logits.append(last.astype("<f4"))
        one.token[0], one.pos[0], one.n_seq_id[0], one.seq_id[0][0], one.logits[0] = tok, len(ids) + step, 1, 0, 1
        one.n_tokens = 1
        assert L.llama_decode(ctx, one) == 0
        last = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, 0), shape=(vocab,)).copy()
        collect()
    logits.tofile(f"{out}/llamacpp-{ty}.logits.f32")
    np.stack(gen_logits).tofile(f"{out}/llamacpp-{ty}.gen_logits.f32")
    info = {"gguf": f"model-{ty}.gguf", "llama_cpp": "0c1e570 (llama-cpp-python 0.3.36)",
            "input_ids": ids, "vocab": vocab, "gen_ids": gen,
            "experts": {str(k): v for k, v in experts.items()},
            "router_gap": {str(k): v for k, v in router_gap.items()}}
    json.dump(info, open(f"{out}/llamacpp-{ty}.json", "w"))
    print(ty, logits.shape, "layers with experts", sorted(experts), "greedy", gen)
    L.llama_batch_free(batch)
    L.llama_batch_free(one)
    L.llama_free(ctx)
    L.llama_model_free(model)
