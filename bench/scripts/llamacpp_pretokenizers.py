#!/usr/bin/env python3
"""llama.cpp's own tokenization of a set of texts under every pre-tokenizer name floe
rebuilds, on one byte-level BPE vocabulary made here: 2000 merges learned on the texts
themselves *across* word, digit and script boundaries, so a piece boundary the pre-tokenizer
draws shows in the ids. Writes `vocab.gguf` (the vocabulary, `qwen3moe` metadata otherwise
copied from a golden GGUF) and `llamacpp.json` ({"texts": [...], "ids": {name: [[...]]}}):
for each name, a copy with `tokenizer.ggml.pre` set to it, loaded by llama.cpp with
`vocab_only`, the texts (in NFC) tokenized without special tokens. For floe's test
`pre_tokenizers_split_like_llama_cpp`.

  PYTHONPATH=/path/to/llama_cpp_python-0.3.36 \\
  LLAMA_CPP_LIB_PATH=/path/to/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin \\
  python3 bench/scripts/llamacpp_pretokenizers.py ../shared/golden/qwen3_moe/model-F32.gguf tests/fixtures/pretok
"""
import ctypes, json, os, sys, tempfile

import gguf
import llama_cpp as L

NAMES = ["qwen2", "qwen35", "deepseek-r1-qwen", "hunyuan", "llama3", "llama-bpe", "smaug-bpe",
         "dbrx", "chatglm-bpe", "glm4", "glm5", "deepseek-v3", "hunyuan-dense", "gpt-4o",
         "llama4", "minimax-m2", "default", "olmo", "gpt-2", "starcoder", "refact", "kimi-k2"]
TEXTS = [
    "Hello world! It's a test, isn't it? They'll say we'd've DONE it.",
    "Numbers: 1 12 123 1234 12345 3.14159 and 2026-12-05, 0x1F.",
    "   leading spaces\n\nand\tTabs\r\nCRLF   trailing   ",
    "中文分词测试：你好，世界！日本語のテキストとカタカナ。한국어 텍스트.",
    # Already in NFC: floe NFC-normalises for the Qwen names as their tokenizer.json does,
    # llama.cpp does not normalise (the golden tokenizer test covers decomposed text).
    "café naïve résumé — “quotes” ‘single’ …ellipsis… ñ ü ø Å",
    "CamelCaseWords HTTPServer iPhone McDonald's ALLCAPS lowerUPPER",
    "code: fn main() { let x = a[i] + b->c; } // comment #tag @user $var %mod ^xor",
    "emoji 🙂🚀 mixed😀text and math ∑∫√∞ ≤≥ αβγ Δ",
    "a\n b\n  c\n\n\n   d",
    "!!!???...,,,;;; ---___===+++",
]



def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# Byte-level BPE learned on the texts as whole sequences (merges cross every boundary).
b2u = bytes_to_unicode()
seqs = [[b2u[b] for b in t.encode()] for t in TEXTS * 3]
tokens = [b2u[b] for b in range(256)]
merges = []
for _ in range(2000):
    counts = {}
    for s_ in seqs:
        for a, b in zip(s_, s_[1:]):
            counts[(a, b)] = counts.get((a, b), 0) + 1
    if not counts:
        break
    (a, b), c = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if c < 2:
        break
    merges.append(f"{a} {b}")
    tokens.append(a + b)
    for i, s_ in enumerate(seqs):
        out_, j = [], 0
        while j < len(s_):
            if j + 1 < len(s_) and s_[j] == a and s_[j + 1] == b:
                out_.append(a + b)
                j += 2
            else:
                out_.append(s_[j])
                j += 1
        seqs[i] = out_
tokens.append("<|endoftext|>")
types = [1] * (len(tokens) - 1) + [3]

src = gguf.GGUFReader(sys.argv[1])
L.llama_backend_init()
out = {"texts": TEXTS, "ids": {}}
tmp = tempfile.mkdtemp()
own = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
       "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
       "tokenizer.ggml.padding_token_id", "tokenizer.ggml.pre", "tokenizer.chat_template"}


def write(path, name):
    w = gguf.GGUFWriter(path, arch=bytes(src.fields["general.architecture"].parts[-1]).decode())
    for key, f in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in own:
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub_type=sub)
    w.add_tokenizer_pre(name)
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_eos_token_id(len(tokens) - 1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


write(os.path.join(sys.argv[2], "vocab.gguf"), "default")
for name in NAMES:
    path = os.path.join(tmp, f"{name}.gguf")
    write(path, name)
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(path.encode(), params)
    assert model, name
    vocab = L.llama_model_get_vocab(model)
    ids = []
    for text in TEXTS:
        b = text.encode()
        buf = (L.llama_token * (4 * len(b) + 8))()
        n = L.llama_tokenize(vocab, b, len(b), buf, len(buf), False, False)
        assert n >= 0, (name, text)
        ids.append(list(buf[:n]))
    out["ids"][name] = ids
    L.llama_model_free(model)
    print(name, [len(i) for i in ids])
json.dump(out, open(os.path.join(sys.argv[2], "llamacpp.json"), "w"), ensure_ascii=False, indent=0)
