#!/usr/bin/env python3
"""MXFP4 test vectors from gguf-py (`pip install gguf`), the reference implementation of ggml's
MXFP4 in numpy: a [4, 256] f32 tensor (normal values of several magnitudes, exact zeros, an
all-zero block, tiny and huge blocks), its MXFP4 bytes (gguf.quants.quantize) and their
dequantisation (gguf.quants.dequantize). Writes tests/fixtures/mxfp4/vectors.bin:
f32 input (1024 values) | MXFP4 bytes (32 blocks x 17) | f32 dequantised (1024 values),
little-endian.
Usage: python3 bench/scripts/make_mxfp4_vectors.py tests/fixtures/mxfp4/vectors.bin"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

rng = np.random.default_rng(7)
x = rng.standard_normal((4, 256)).astype(np.float32)
x[0, :32] = 0.0                       # an all-zero block
x[1, 32:64] *= 1e-30                  # tiny scales (subnormal exponents)
x[2, 64:96] *= 1e6                    # huge ones
x[3, ::7] = 0.0                       # zeros inside blocks
x[3, 100] = 6.0; x[3, 101] = -6.0     # exactly representable extremes
q = quantize(x, T.MXFP4)
y = dequantize(q, T.MXFP4).astype(np.float32)
with open(sys.argv[1], "wb") as f:
    f.write(x.astype("<f4").tobytes()); f.write(q.tobytes()); f.write(y.astype("<f4").tobytes())
print("wrote", sys.argv[1], x.size, "values,", q.size, "bytes")
