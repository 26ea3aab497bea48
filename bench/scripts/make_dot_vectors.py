#!/usr/bin/env python3
"""Dot-product vectors: llama.cpp's own `vec_dot` of every legacy, IQ and TQ type (and Q2_K,
Q3_K) with its activation type, for floe's test `dots_round_like_llama_cpp`. The weights are
the random blocks of `tests/fixtures/quant/vectors.gguf` (Q2_K and Q3_K: random blocks made
here, finite scales); the activations random f32 rows of a few spreads, quantised by ggml's
own `from_float` of the type's `vec_dot_type` (Q8_K, Q8_0 or Q8_1), then dotted with each
weight row by the type's `vec_dot` from libggml-cpu (the x86 AVX2 kernels on an AVX2 machine).
One GGUF: `<TYPE>` the weight rows, `<TYPE>.x` the f32 activations [k, n], `<TYPE>.dot` the
results [k, rows]. IQ4_NL also as `IQ4_NL_ODD`, rows of an odd number of blocks (ggml's
pairwise loop then ends in its scalar tail).

  PYTHONPATH=/path/to/llama_cpp_python-0.3.36 \\
  LLAMA_CPP_LIB_PATH=/path/to/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin \\
  python3 bench/scripts/make_dot_vectors.py tests/fixtures/quant/vectors.gguf tests/fixtures/quant/dots.gguf
"""
import ctypes
import os
import sys

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

lib = ctypes.CDLL(os.path.join(os.environ["LLAMA_CPP_LIB_PATH"], "libggml-cpu.so"))


class Traits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
lib.ggml_cpu_init()
FROM = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t,
                       ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

rng = np.random.default_rng(20261205)
vectors = gguf.GGUFReader(sys.argv[1])
weights = {}
for t in vectors.tensors:
    if not t.name.endswith(".f32"):
        ty = T[t.name]
        per, size = GGML_QUANT_SIZES[ty]
        n = int(t.shape[0])
        weights[t.name] = (ty, np.asarray(t.data).reshape(-1).view(np.uint8).reshape(-1, n // per * size), n)

# Q2_K and Q3_K: random codes and sub-scales with small finite f16 super-block scales.
for ty, scale_at in ((T.Q2_K, [80, 82]), (T.Q3_K, [108])):
    per, size = GGML_QUANT_SIZES[ty]
    rows, n = 8, 512
    raw = rng.integers(0, 256, size=(rows * n // per, size), dtype=np.uint8)
    for off in scale_at:
        d = (rng.uniform(1e-4, 2e-2, size=len(raw)) * rng.choice([-1, 1], size=len(raw))).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(-1, 2)
    weights[ty.name] = (ty, raw.reshape(rows, -1), n)

# IQ4_NL rows of 15 blocks (the last row's bytes dropped).
ty, raw, n = weights["IQ4_NL"]
per, size = GGML_QUANT_SIZES[ty]
flat = raw.reshape(-1)
rows = len(flat) // (15 * size)
weights["IQ4_NL_ODD"] = (ty, flat[: rows * 15 * size].reshape(rows, 15 * size), 15 * per)

w = gguf.GGUFWriter(sys.argv[2], "quant-dot-test")
for name, (ty, raw, n) in weights.items():
    tr = lib.ggml_get_type_traits_cpu(int(ty)).contents
    vt = gguf.constants.GGMLQuantizationType(tr.vec_dot_type)
    vper, vsize = GGML_QUANT_SIZES[vt]
    from_float = FROM(lib.ggml_get_type_traits_cpu(int(vt)).contents.from_float)
    dot = DOT(tr.vec_dot)
    spreads = [0.02, 1.0, 30.0]
    xs = np.stack([rng.standard_normal(n) * s for s in spreads]).astype(np.float32)
    xs[1, 5] = 0.0
    out = np.zeros((len(xs), len(raw)), dtype=np.float32)
    for k, x in enumerate(xs):
        q = ctypes.create_string_buffer(n // vper * vsize)
        from_float(x.ctypes.data, q, n)
        for r, row in enumerate(raw):
            row = np.ascontiguousarray(row)
            s = ctypes.c_float()
            dot(n, ctypes.byref(s), 0, row.ctypes.data, 0, q, 0, 1)
            out[k, r] = s.value
    w.add_tensor(name, raw, raw_dtype=ty)
    w.add_tensor(name + ".x", xs)
    w.add_tensor(name + ".dot", out)
    print(name, ty.name, "with", vt.name, raw.shape)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
