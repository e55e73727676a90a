"""Golden fixtures for attention, RoPE and the patch embedding (include/aligngpt/ops/{attention,rope,
patch_embed}.h), read by tests/test_attention.cpp.

Inputs, parameters and upstream gradients are filled with hashfill (the same values rng.h gives in
C++, so they are not stored); outputs and gradients come from PyTorch / transformers 4.31 in float32
on the CPU (op_attn_math also in float64). Layouts are ours:
q [B, T, NH*HS], k and v [B, Tk, NKV*HS] (HF's [B, heads, T, HS] is transposed before saving).

    /usr/bin/python3 tests/tools/make_golden.py op_attn_math op_attn_llama op_attn_clip op_attn_wide \
        op_rope op_patch_embed
"""
import math

import torch
from transformers import CLIPVisionConfig, LlamaConfig
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPVisionEmbeddings
from transformers.models.llama.modeling_llama import (LlamaAttention, LlamaLinearScalingRotaryEmbedding,
                                                      LlamaRotaryEmbedding, apply_rotary_pos_emb)

from .common import hashfill, save


def _leaf(name, shape, a=1.0):
    return hashfill(name, shape, a).requires_grad_(True)


def _fill_params(module, prefix, a=0.2):
    """Every parameter of module <- hashfill(prefix + its name)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(hashfill(prefix + name, tuple(p.shape), a))


def attention_math(q, k, v, NH, NKV, scale, causal, past, key_mask):
    """The math of ops/attention.h spelled out: q [B,T,NH*HS], k, v [B,Tk,NKV*HS], key_mask [B,Tk] 0/1.
    Scores are multiplied by scale; fully masked rows give p = 0 (not a uniform row)."""
    B, T, C = q.shape
    Tk, HS = k.shape[1], C // NH
    qh = q.view(B, T, NH, HS).transpose(1, 2)                                   # [B, NH, T, HS]
    kh = k.view(B, Tk, NKV, HS).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
    vh = v.view(B, Tk, NKV, HS).transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
    s = (qh @ kh.transpose(2, 3)) * scale                                       # [B, NH, T, Tk]
    vis = key_mask.bool()[:, None, None, :].expand(B, NH, T, Tk)
    if causal:
        t = torch.arange(T)[:, None] + past
        vis = vis & (torch.arange(Tk)[None, :] <= t)[None, None]
    m = torch.where(vis, s, torch.full_like(s, -math.inf)).amax(-1, keepdim=True).detach()
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)                     # fully masked rows
    e = torch.exp(torch.where(vis, s, torch.zeros_like(s)) - m) * vis
    z = e.sum(-1, keepdim=True)
    p = e / torch.where(z > 0, z, torch.ones_like(z))
    return (p @ vh).transpose(1, 2).reshape(B, T, C)


MATH_CASES = {
    # name: B, T, Tk, NH, NKV, HS, scale, causal, past, key mask rows (None = all ones)
    "gqa_causal_pad": (2, 5, 7, 4, 2, 8, 8 ** -0.5, True, 2, [[1] * 7, [1] * 5 + [0] * 2]),
    "left_pad_fully_masked": (2, 6, 6, 2, 2, 8, 8 ** -0.5, True, 0, [[1] * 6, [0, 0, 1, 1, 1, 1]]),
    "clip_no_mask": (2, 9, 9, 3, 3, 16, 0.125, False, 0, None),
    "mqa_cross": (1, 3, 10, 4, 1, 8, 0.3, False, 0, [[1] * 8 + [0] * 2]),
}


def golden_op_attn_math():
    out = {}
    for name, (B, T, Tk, NH, NKV, HS, scale, causal, past, mask) in MATH_CASES.items():
        q, k, v = (_leaf(f"attn.{name}.{x}", (B, n, h * HS)) for x, n, h in
                   (("q", T, NH), ("k", Tk, NKV), ("v", Tk, NKV)))
        dy = hashfill(f"attn.{name}.dy", (B, T, NH * HS), 1.0)
        km = torch.ones(B, Tk, dtype=torch.int64) if mask is None else torch.tensor(mask, dtype=torch.int64)
        p = f"{name}."
        out.update({p + "key_mask": km,
                    p + "opts": torch.tensor([NH, NKV, int(causal), past], dtype=torch.int64),
                    p + "scale": torch.tensor([scale], dtype=torch.float64)})
        for dt, suffix in ((torch.float32, ""), (torch.float64, "64")):
            xs = [x.detach().to(dt).requires_grad_(True) for x in (q, k, v)]
            y = attention_math(*xs, NH, NKV, scale, causal, past, km)
            y.backward(dy.to(dt))
            out.update({p + "y" + suffix: y, p + "dq" + suffix: xs[0].grad, p + "dk" + suffix: xs[1].grad,
                        p + "dv" + suffix: xs[2].grad})
    return save("op_attn_math", out)


def golden_op_attn_llama():
    """transformers 4.31 LlamaAttention (GQA 4/2 heads, rope, causal + right padding), rope_scaling none
    and linear. Our composition: linear q/k/v -> rope(q), rope(k) -> attention -> linear o."""
    out = {}
    B, S, H = 2, 6, 32
    for case, rs in (("plain", None), ("linear2", {"type": "linear", "factor": 2.0})):
        cfg = LlamaConfig(hidden_size=H, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rope_scaling=rs)
        m = LlamaAttention(cfg)
        _fill_params(m, "llama_attn.")
        x = _leaf("llama_attn.x", (B, S, H))
        lengths = [6, 4]
        vis = torch.tril(torch.ones(S, S, dtype=torch.bool))[None].repeat(B, 1, 1)
        for b, n in enumerate(lengths):
            vis[b, :, n:] = False
        mask = torch.zeros(B, 1, S, S).masked_fill(~vis[:, None], torch.finfo(torch.float32).min)
        pos = torch.arange(S)[None].repeat(B, 1)
        y = m(x, attention_mask=mask, position_ids=pos)[0]
        dy = hashfill("llama_attn.dy", (B, S, H), 1.0)
        y.backward(dy)
        p = case + "."
        out.update({p + "y": y, p + "dx": x.grad})
        out.update({p + "dW" + n[0]: w.grad for n, w in m.named_parameters()})        # q_proj -> dWq
        if case == "plain":
            out["key_lengths"] = torch.tensor(lengths, dtype=torch.int64)
    # KV-cache decode step (4.31 path with past_key_value): prefill tokens 0..4, then token 5 at
    # position 5 against the 6 cached keys (post-rope k, v), under the same padding.
    with torch.no_grad():
        m = LlamaAttention(LlamaConfig(hidden_size=H, num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=64))
        _fill_params(m, "llama_attn.")
        x = hashfill("llama_attn.x", (B, S, H), 1.0)
        _, _, past = m(x[:, :S - 1], attention_mask=mask[:, :, :S - 1, :S - 1],
                       position_ids=pos[:, :S - 1], use_cache=True)
        y1 = m(x[:, S - 1:], attention_mask=mask[:, :, S - 1:, :], position_ids=pos[:, S - 1:],
               past_key_value=past)[0]
    out["decode.y"] = y1
    return save("op_attn_llama", out)


def golden_op_attn_clip():
    """transformers 4.31 CLIPAttention (2 heads of 16: scale 0.25, biases, no mask)."""
    cfg = CLIPVisionConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    m = CLIPAttention(cfg)
    _fill_params(m, "clip_attn.")
    x = _leaf("clip_attn.x", (2, 5, 32))
    y = m(x)[0]
    y.backward(hashfill("clip_attn.dy", (2, 5, 32), 1.0))
    out = {"y": y, "dx": x.grad}
    out.update({"d." + n: w.grad for n, w in m.named_parameters()})               # d.q_proj.weight, ...
    return save("op_attn_clip", out)


WIDE_ROWS = list(range(0, 600, 50)) + [599]


def golden_op_attn_wide():
    """Full width: HS=128, NH=2, T=600, causal, LLaMA's scale (q.k / sqrt(128)). Inputs are hashfill
    on both sides; only rows WIDE_ROWS of y, dq, dk, dv and a float64 checksum of each are stored."""
    B, T, NH, HS = 1, 600, 2, 128
    q, k, v = (_leaf("attn_wide." + n, (B, T, NH * HS)) for n in "qkv")
    dy = hashfill("attn_wide.dy", (B, T, NH * HS), 1.0)
    qh, kh, vh = (x.view(B, T, NH, HS).transpose(1, 2) for x in (q, k, v))
    s = (qh @ kh.transpose(2, 3)) / math.sqrt(HS)
    s = s.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), torch.finfo(torch.float32).min)
    y = (torch.softmax(s, dim=-1) @ vh).transpose(1, 2).reshape(B, T, NH * HS)
    y.backward(dy)
    w = hashfill("attn_wide.checksum", (B, T, NH * HS), 1.0).double()
    rows = torch.tensor(WIDE_ROWS)
    out = {"rows": rows}
    for n, t in (("y", y), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        out[n] = t[0, rows]
        out[n + ".checksum"] = (t.double() * w).sum().reshape(1)
        out[n + ".abssum"] = t.double().abs().sum().reshape(1)
    return save("op_attn_wide", out)


def llama3_inv_freq(HS, theta, factor, low, high, old_len):
    """Newer transformers' llama3 rope frequencies, written out with the same torch float32 ops."""
    inv = 1.0 / (theta ** (torch.arange(0, HS, 2, dtype=torch.int64).float() / HS))
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
    return torch.where(medium, smoothed, scaled)


def golden_op_rope():
    out = {}
    B, S, NH, HS = 2, 5, 3, 16
    pos = torch.tensor([[0, 1, 2, 3, 4], [7, 100, 1000, 2047, 31]], dtype=torch.int64)
    out["pos"] = pos
    # HF modules: rotary cache [1, 1, max_pos, HS], apply_rotary_pos_emb gathers rows by position_ids
    for case, emb in (("plain", LlamaRotaryEmbedding(HS, max_position_embeddings=2048)),
                      ("linear4", LlamaLinearScalingRotaryEmbedding(HS, max_position_embeddings=2048,
                                                                    scaling_factor=4.0))):
        x = _leaf("rope.x", (B, S, NH * HS))
        xh = x.view(B, S, NH, HS).transpose(1, 2)
        cos, sin = emb(xh, seq_len=2048)
        _, y = apply_rotary_pos_emb(xh, xh, cos, sin, pos)
        y = y.transpose(1, 2).reshape(B, S, NH * HS)
        dy = hashfill("rope.dy", (B, S, NH * HS), 1.0)
        y.backward(dy)
        out.update({case + ".y": y, case + ".dx": x.grad, case + ".inv_freq": emb.inv_freq})
    # llama3 scaling (theta 5e5, factor 8, low 1, high 4, original 8192), positions up to 100k
    inv = llama3_inv_freq(HS, 500000.0, 8.0, 1.0, 4.0, 8192)
    pos3 = torch.tensor([[0, 5, 8191, 8192, 70000], [99999, 3, 4096, 12345, 1]], dtype=torch.int64)
    freqs = pos3.float()[..., None] * inv                                       # [B, S, HS/2]
    emb3 = torch.cat((freqs, freqs), dim=-1)
    x = _leaf("rope.x", (B, S, NH * HS))
    xh = x.view(B, S, NH, HS).transpose(1, 2)
    c, s = emb3.cos()[:, None], emb3.sin()[:, None]
    rot = torch.cat((-xh[..., HS // 2:], xh[..., :HS // 2]), dim=-1)
    y = (xh * c + rot * s).transpose(1, 2).reshape(B, S, NH * HS)
    y.backward(hashfill("rope.dy", (B, S, NH * HS), 1.0))
    out.update({"llama3.pos": pos3, "llama3.y": y, "llama3.dx": x.grad, "llama3.inv_freq": inv})
    # inv_freq tables at full size (the models' head sizes and thetas)
    out["inv_freq.128.1e4"] = LlamaRotaryEmbedding(128, max_position_embeddings=16).inv_freq
    out["inv_freq.64.1e4"] = LlamaRotaryEmbedding(64, max_position_embeddings=16).inv_freq
    out["inv_freq.128.5e5.llama3"] = llama3_inv_freq(128, 500000.0, 8.0, 1.0, 4.0, 8192)
    out["inv_freq.128.5e5.llama3_32"] = llama3_inv_freq(128, 500000.0, 32.0, 1.0, 4.0, 8192)
    return save("op_rope", out)


def golden_op_patch_embed():
    """transformers 4.31 CLIPVisionEmbeddings.patch_embedding (Conv2d 3->6, kernel = stride = 14, no
    bias) on [2, 3, 28, 28], and the same conv on a non-square [1, 3, 28, 42] image."""
    cfg = CLIPVisionConfig(hidden_size=6, image_size=28, patch_size=14, num_channels=3)
    conv = CLIPVisionEmbeddings(cfg).patch_embedding
    _fill_params(conv, "patch.", 0.05)
    out = {}
    for case, shape in (("square", (2, 3, 28, 28)), ("wide", (1, 3, 28, 42))):
        px = _leaf(f"patch.{case}.px", shape)
        y = conv(px).flatten(2).transpose(1, 2)
        dy = hashfill(f"patch.{case}.dy", tuple(y.shape), 1.0)
        conv.weight.grad = None
        y.backward(dy)
        out.update({case + ".y": y, case + ".dpx": px.grad,
                    case + ".dw": conv.weight.grad.clone()})
    return save("op_patch_embed", out)
