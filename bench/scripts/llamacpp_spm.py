#!/usr/bin/env python3
"""llama.cpp's own SentencePiece (`tokenizer.ggml.model = llama`, Mixtral's and Llama 2's GGUFs)
tokenization of a set of texts, for floe's test `spm_tokenizer_matches_llama_cpp`. A vocabulary
is made here: <unk>, <s>, </s>, the 256 byte tokens <0xXX>, every character of the texts but a
few (so byte fallback is exercised), and up to 1500 pieces of at most 6 characters learned on
the texts with spaces as "▁"
(scores falling with learning order). Writes `spm.gguf` (vocab only; `qwen3moe` metadata
otherwise copied from a golden GGUF) and `llamacpp-spm.json` ({"texts": [...], "ids": [...]}).

  PYTHONPATH=/path/to/llama_cpp_python-0.3.36 \\
  LLAMA_CPP_LIB_PATH=/path/to/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin \\
  python3 bench/scripts/llamacpp_spm.py ../shared/golden/qwen3_moe/model-F32.gguf tests/fixtures/pretok
"""
import json, os, sys

import gguf
import llama_cpp as L

TEXTS = [
    "Hello world! It's a test, isn't it? They'll say we'd've DONE it.",
    "Numbers: 1 12 123 1234 12345 3.14159 and 2026-12-05, 0x1F.",
    "   leading spaces\n\nand\tTabs\r\nCRLF   trailing   ",
    "中文分词测试：你好，世界！日本語のテキスト。",
    "café naïve résumé — “quotes” ‘single’ …ellipsis…",
    "CamelCaseWords HTTPServer iPhone McDonald's ALLCAPS lowerUPPER",
    "code: fn main() { let x = a[i] + b->c; } // comment #tag @user",
    "emoji 🙂🚀 mixed😀text and math ∑∫√∞ αβγ",
    "a\n b\n  c\n\n\n   d",
    "the the the thethe then there their they theory",
]
SPACE = "\u2581"
# Characters left out of the vocabulary: written as byte tokens.
MISSING = set("🚀∫世ü")

corpus = [(SPACE + t.replace(" ", SPACE)) for t in TEXTS]
chars = sorted({c for t in corpus for c in t} - MISSING)
seqs = [list(t) for t in corpus]
pieces = []
for _ in range(1500):
    counts = {}
    for s in seqs:
        for a, b in zip(s, s[1:]):
            if a in MISSING or b in MISSING or len(a) + len(b) > 6:
                continue
            counts[(a, b)] = counts.get((a, b), 0) + 1
    if not counts:
        break
    (a, b), c = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if c < 2:
        break
    pieces.append(a + b)
    for i, s in enumerate(seqs):
        out, j = [], 0
        while j < len(s):
            if j + 1 < len(s) and s[j] == a and s[j + 1] == b:
                out.append(a + b)
                j += 2
            else:
                out.append(s[j])
                j += 1
        seqs[i] = out

tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
types = [2, 3, 3] + [6] * 256
scores = [0.0, 0.0, 0.0] + [0.0] * 256
seen = set(tokens)
for i, p in enumerate(pieces):  # learned pieces: earlier = higher score
    if p not in seen:
        tokens.append(p); types.append(1); scores.append(-float(i)); seen.add(p)
for c in chars:  # single characters last, lowest scores
    if c not in seen:
        tokens.append(c); types.append(1); scores.append(-1e4); seen.add(c)

src = gguf.GGUFReader(sys.argv[1])
path = os.path.join(sys.argv[2], "spm.gguf")
w = gguf.GGUFWriter(path, arch=bytes(src.fields["general.architecture"].parts[-1]).decode())
for key, f in src.fields.items():
    if key.startswith("GGUF.") or key == "general.architecture" or key.startswith("tokenizer."):
        continue
    vtype = f.types[0]
    sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
    w.add_key_value(key, f.contents(), vtype, sub_type=sub)
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores(scores)
w.add_token_types(types)
w.add_unk_token_id(0)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_add_bos_token(False)
w.add_add_space_prefix(True)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

L.llama_backend_init()
params = L.llama_model_default_params()
params.vocab_only = True
model = L.llama_model_load_from_file(path.encode(), params)
assert model
vocab = L.llama_model_get_vocab(model)
ids = []
for text in TEXTS:
    b = text.encode()
    buf = (L.llama_token * (4 * len(b) + 8))()
    n = L.llama_tokenize(vocab, b, len(b), buf, len(buf), False, False)
    assert n >= 0, text
    ids.append(list(buf[:n]))
    print(len(ids[-1]), text[:30])
json.dump({"texts": TEXTS, "ids": ids}, open(os.path.join(sys.argv[2], "llamacpp-spm.json"), "w"),
          ensure_ascii=False, indent=0)
