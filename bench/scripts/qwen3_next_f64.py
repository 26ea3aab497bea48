#!/usr/bin/env python3
"""The Qwen3-Next golden's exact model: the checkpoint run in float64 with numpy (recurrent Gated
DeltaNet, gated attention, MoE with shared expert), compared per layer with transformers' float32
outputs in golden.safetensors, and, given floe's prompt logits, with floe.

Usage: bench/scripts/qwen3_next_f64.py [GOLDEN_DIR] [FLOE_LOGITS.f32]
FLOE_LOGITS.f32: little-endian f32 [positions x vocab], as the golden test writes it with
`FLOE_DUMP_LOGITS=DIR cargo test --release -p floe-tests --test golden qwen3_next` (DIR/qwen3_next.f32).
It shows how far transformers' own float32 logits are from the exact model on this checkpoint.
"""
import json, struct, sys
import numpy as np

D = sys.argv[1] if len(sys.argv) > 1 else "../shared/golden/qwen3_next"


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).reshape(v["shape"])
    return out


W = {k: v.astype(np.float64) for k, v in load(f"{D}/model.safetensors").items()}
G = load(f"{D}/golden.safetensors")
cfg = json.load(open(f"{D}/config.json"))
ids = G["input_ids"].astype(int)
T = len(ids)
H = cfg["hidden_size"]
eps = cfg["rms_norm_eps"]


def rms(x, w):  # zero-centred
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1.0 + w)


def silu(x):
    return x / (1.0 + np.exp(-x))


def softplus(x):
    return np.log1p(np.exp(x))


def l2n(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)


nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]


def deltanet(x, p):
    qkvz = x @ W[p + "in_proj_qkvz.weight"].T  # [T, nk*(2dk+2dv*r)]
    ba = x @ W[p + "in_proj_ba.weight"].T
    r = nv // nk
    qkvz = qkvz.reshape(T, nk, 2 * dk + 2 * dv * r)
    q = qkvz[:, :, :dk].reshape(T, -1)
    k = qkvz[:, :, dk:2 * dk].reshape(T, -1)
    v = qkvz[:, :, 2 * dk:2 * dk + dv * r].reshape(T, -1)
    z = qkvz[:, :, 2 * dk + dv * r:].reshape(T, nv, dv)
    ba = ba.reshape(T, nk, 2 * r)
    b = ba[:, :, :r].reshape(T, nv)
    a = ba[:, :, r:].reshape(T, nv)
    mixed = np.concatenate([q, k, v], -1)  # [T, C]
    cw = W[p + "conv1d.weight"][:, 0, :]  # [C, K]
    K = cw.shape[1]
    pad = np.concatenate([np.zeros((K - 1, mixed.shape[1])), mixed], 0)
    conv = np.stack([(pad[t:t + K] * cw.T).sum(0) for t in range(T)])
    conv = silu(conv)
    q = conv[:, :nk * dk].reshape(T, nk, dk)
    k = conv[:, nk * dk:2 * nk * dk].reshape(T, nk, dk)
    v = conv[:, 2 * nk * dk:].reshape(T, nv, dv)
    beta = 1 / (1 + np.exp(-b))
    g = -np.exp(W[p + "A_log"]) * softplus(a + W[p + "dt_bias"])
    q = np.repeat(q, r, axis=1)
    k = np.repeat(k, r, axis=1)
    q = l2n(q) / np.sqrt(dk)
    k = l2n(k)
    S = np.zeros((nv, dk, dv))
    out = np.zeros((T, nv, dv))
    for t in range(T):
        S = S * np.exp(g[t])[:, None, None]
        kv = np.einsum("hkv,hk->hv", S, k[t])
        delta = (v[t] - kv) * beta[t][:, None]
        S = S + k[t][:, :, None] * delta[:, None, :]
        out[t] = np.einsum("hkv,hk->hv", S, q[t])
    nw = W[p + "norm.weight"]
    o = out / np.sqrt((out * out).mean(-1, keepdims=True) + eps) * nw * silu(z)
    return o.reshape(T, -1) @ W[p + "out_proj.weight"].T


nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
rd = int(hd * cfg["rope_parameters"]["partial_rotary_factor"])
theta = cfg["rope_parameters"]["rope_theta"]
inv = 1.0 / theta ** (np.arange(0, rd, 2) / rd)
pos = np.arange(T)[:, None] * inv[None, :]
cos = np.cos(np.concatenate([pos, pos], -1))
sin = np.sin(np.concatenate([pos, pos], -1))


def rope(x):  # [T, h, hd]
    xr = x[..., :rd]
    x1, x2 = xr[..., :rd // 2], xr[..., rd // 2:]
    rot = np.concatenate([-x2, x1], -1)
    y = xr * cos[:, None, :] + rot * sin[:, None, :]
    return np.concatenate([y, x[..., rd:]], -1)


def attention(x, p):
    qg = (x @ W[p + "q_proj.weight"].T).reshape(T, nh, 2 * hd)
    q, gate = qg[..., :hd], qg[..., hd:].reshape(T, -1)
    k = (x @ W[p + "k_proj.weight"].T).reshape(T, nkv, hd)
    v = (x @ W[p + "v_proj.weight"].T).reshape(T, nkv, hd)
    q = rope(rms(q, W[p + "q_norm.weight"]))
    k = rope(rms(k, W[p + "k_norm.weight"]))
    rep = nh // nkv
    out = np.zeros((T, nh, hd))
    for h in range(nh):
        s = q[:, h] @ k[:, h // rep].T / np.sqrt(hd)
        s = s + np.triu(np.full((T, T), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        out[:, h] = s @ v[:, h // rep]
    out = out.reshape(T, -1) * (1 / (1 + np.exp(-gate)))
    return out @ W[p + "o_proj.weight"].T


def mlp(x, p):
    return (silu(x @ W[p + "gate_proj.weight"].T) * (x @ W[p + "up_proj.weight"].T)) @ W[p + "down_proj.weight"].T


def moe(x, p):
    logits = x @ W[p + "gate.weight"].T
    pr = np.exp(logits - logits.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    kk = cfg["num_experts_per_tok"]
    idx = np.argsort(-pr, -1)[:, :kk]
    out = np.zeros_like(x)
    for t in range(T):
        w = pr[t, idx[t]]
        w = w / w.sum()
        for e, we in zip(idx[t], w):
            out[t] += we * mlp(x[t:t + 1], f"{p}experts.{e}.")[0]
    sh = mlp(x, p + "shared_expert.")
    sg = 1 / (1 + np.exp(-(x @ W[p + "shared_expert_gate.weight"].T)))
    return out + sg * sh, idx


h = W["model.embed_tokens.weight"][ids]
for l, kind in enumerate(cfg["layer_types"]):
    p = f"model.layers.{l}."
    hn = rms(h, W[p + "input_layernorm.weight"])
    a = deltanet(hn, p + "linear_attn.") if kind == "linear_attention" else attention(hn, p + "self_attn.")
    print(f"layer {l} {kind[:6]}: attn_out vs golden {np.abs(a - G[f'attn_out.{l}']).max():.2e} (scale {np.abs(a).max():.2e})")
    h = h + a
    m, idx = moe(rms(h, W[p + "post_attention_layernorm.weight"]), p + "mlp.")
    print(f"           mlp_out vs golden {np.abs(m - G[f'mlp_out.{l}']).max():.2e}; experts equal {np.array_equal(np.sort(idx,-1), np.sort(G[f'router_topk_idx.{l}'],-1))}")
    h = h + m
    print(f"           hidden.{l+1} vs golden {np.abs(h - G[f'hidden.{l+1}']).max():.2e}")
logits = rms(h, W["model.norm.weight"]) @ W["lm_head.weight"].T
d = np.abs(logits - G["logits"])
print(f"logits: largest differences per position {np.sort(d.max(-1))[-3:]}, the largest at position {d.max(-1).argmax()}")
print(f"transformers (f32) vs the exact model: {d.max():.2e}")
if len(sys.argv) > 2:
    floe = np.fromfile(sys.argv[2], dtype="<f4").reshape(logits.shape)
    print(f"floe vs the exact model: {np.abs(floe - logits).max():.2e}; "
          f"floe vs transformers: {np.abs(floe - G['logits']).max():.2e}")
