#!/usr/bin/env python3
"""Dequantisation vectors for the legacy, IQ and TQ types: random blocks of every type (codes
and grid indices uniform over their whole range, scales finite, one block with a zero scale and
half with negative scales) and their dequantisation by gguf-py's reference `gguf.quants`
(the numpy twin of ggml's `to_float`), in one GGUF file: tensor `<TYPE>` holds the raw blocks,
`<TYPE>.f32` the expected values. floe's test `quant_vectors_dequantise_like_ggml` checks every
value bit for bit.

  pip install gguf numpy && python3 bench/scripts/make_quant_vectors.py tests/fixtures/quant/vectors.gguf
"""
import sys

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T

ROWS, COLS = 8, 512
# Byte offsets of each block's f16 scales (IQ1_M spreads its scale over four nibbles).
SCALES = {
    T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.IQ4_NL: [0], T.IQ4_XS: [0],
    T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0], T.IQ3_S: [0], T.IQ1_S: [0],
    T.IQ1_M: None, T.TQ1_0: [52], T.TQ2_0: [64],
}

rng = np.random.default_rng(20261205)
w = gguf.GGUFWriter(sys.argv[1], "quant-test")
for ty, offsets in SCALES.items():
    per, size = GGML_QUANT_SIZES[ty]
    n_blocks = ROWS * COLS // per
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    d = (rng.uniform(1e-4, 2e-2, size=n_blocks) * rng.choice([-1, 1], size=n_blocks)).astype(np.float16)
    d[3] = 0.0
    bits = d.view(np.uint16)
    if offsets is None:  # IQ1_M: the scale's nibbles are the top nibbles of four scale words
        scales = raw[:, 48:56].copy().view(np.uint16)
        for k in range(4):
            scales[:, k] = (scales[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
        raw[:, 48:56] = scales.view(np.uint8).reshape(n_blocks, 8)
    else:
        for off in offsets:
            raw[:, off:off + 2] = bits.view(np.uint8).reshape(n_blocks, 2)
            bits = (rng.uniform(-1e-2, 1e-2, size=n_blocks).astype(np.float16)).view(np.uint16)
    values = gguf.quants.dequantize(raw.reshape(ROWS, -1), ty).astype(np.float32)
    assert values.shape == (ROWS, COLS) and np.isfinite(values).all(), ty.name
    w.add_tensor(ty.name, raw.reshape(ROWS, -1), raw_dtype=ty)
    w.add_tensor(ty.name + ".f32", values)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
