#!/usr/bin/python3
"""PyTorch side of bench/bench_generate.cpp: one image and one question through an AlignGPT of the
given shapes, greedy decoding of N tokens with a KV cache; time to first token, decode seconds per
token and peak memory. Plain torch modules only (no transformers), so any torch >= 1.13 runs it.
Weights are random (only time and memory are compared), built directly in bf16, and every
activation is bf16 too, as a model loaded with torch_dtype=torch.bfloat16 runs (--vision-dtype
float32 keeps the vision tower in float32, as ours runs it).

The model (--shapes H,L,NH,I,V,vH,vL,vNH,vI,image,patch; default AlignGPT-7B):
  vision   CLIPVisionModel math: Conv2d patch embedding (no bias), class embedding, position
           embeddings, pre-LayerNorm, encoder layers (LayerNorm, q/k/v/out with bias, quick_gelu
           MLP), run to hidden_states[-2] (vL - 1 layers), CLS dropped: [1, P, vH].
  prefill  projector mlp2x_gelu Linear(vH,H)-GELU-Linear(H,H); the gate: w = softmax(MLP(P->256->7)
           (image tokens . mean of the text embeddings without BOS)), indicator = w E[0:7] + E[7];
           the sequence BOS | indicator | text before the image | P image tokens | text after it;
           L LLaMA decoder layers (HF LlamaDecoderLayer math: RMSNorm in float32, q/k/v/o, RoPE
           rotate_half, causal attention, SwiGLU MLP), final RMSNorm, lm_head over every position
           (transformers 4.31's LlamaForCausalLM does the same).
  decode   one token at a time at position = cache length; keys and values go into a cache
           allocated for the whole sequence (no torch.cat per step); the next token is the argmax.
Attention: F.scaled_dot_product_attention where torch has it (2.x), else matmul / float32 softmax /
matmul as HF's LlamaAttention (torch 1.13).

Token i of the text: BOS = 1 at i = 0, else 3 + (i * 104729) % (V - 3), the same ids as ours;
--before ids (BOS included) precede the image, --after ids follow it.

Timing (time.perf_counter): encode = the vision tower; prefill = projector, gate, splice, LLM and
lm_head; ttft = encode + prefill + the argmax of the last position; decode = each step's forward
and argmax, median over --tokens steps. Peak memory: VmHWM of /proc/self/status, reset (write "5"
to /proc/self/clear_refs) after the weights are built, so it covers generation with the model
resident; where the reset fails, ru_maxrss of the whole process (peak_reset=0).

Output (parsed by bench_generate), one line:
  torch_generate torch=2.5.1 threads=2 positions=659 tokens=16 build_s=9.1 encode_s=.. prefill_s=..
      ttft_s=.. decode_s_per_token=.. peak_rss_GiB=.. peak_reset=1 steps=0.61,0.60,...
Exit status 2 if torch cannot be imported.

  python3 bench/tools/torch_generate.py --tiny --tokens 4        # seconds: a check that it runs
"""
import argparse
import math
import resource
import statistics
import sys
import time

SHAPES_7B = "4096,32,32,11008,32000,1024,24,16,4096,336,14"
SHAPES_TINY = "64,2,4,172,32000,32,3,2,64,336,14"  # bench_generate's BM_generate_tiny


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(reset_ok):
    if reset_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default=SHAPES_7B)
    ap.add_argument("--tiny", action="store_true", help="the tiny model's shapes (overrides --shapes)")
    ap.add_argument("--layers", type=int, default=0, help="LLaMA layers instead of the shapes' (a shape check)")
    ap.add_argument("--before", type=int, default=35, help="text ids before the image, BOS included")
    ap.add_argument("--after", type=int, default=47, help="text ids after the image")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vision-dtype", choices=["bfloat16", "float32"], default="bfloat16",
                    help="the vision tower's weights and activations (ours: float32, as the CLIP directory holds it)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - report any import failure and let the caller go on
        print(f"torch_generate unavailable: {type(e).__name__}: {e}", flush=True)
        return 2

    H, L, NH, I, V, vH, vL, vNH, vI, image, patch = (int(x) for x in (SHAPES_TINY if a.tiny else a.shapes).split(","))
    if a.layers > 0:
        L = a.layers
    if a.before < 1 or a.after < 0 or a.tokens < 1:
        print("torch_generate: --before must be >= 1, --after >= 0, --tokens >= 1", flush=True)
        return 2
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dt = torch.bfloat16
    vdt = getattr(torch, a.vision_dtype)
    sdpa = getattr(F, "scaled_dot_product_attention", None)
    P, hs, vhs = (image // patch) ** 2, H // NH, vH // vNH
    S = a.before + 1 + P + a.after  # BOS | indicator | text | image | text
    cap = S + a.tokens

    # Modules are made uninitialised (skip_init) and filled from a pool of random values: PyTorch's own
    # bf16 init runs at well under 1 GB/s, minutes for the 7B.
    def make(cls, *args, dtype=dt, **kw):
        return torch.nn.utils.skip_init(cls, *args, dtype=dtype, **kw)

    def linear(i, o, bias=False, dtype=dt):
        return make(nn.Linear, i, o, bias=bias, dtype=dtype)

    def layer_norm():
        return make(nn.LayerNorm, vH, eps=1e-5, dtype=vdt)

    def attend(q, k, v, causal, scale):
        if sdpa is not None:
            return sdpa(q, k, v, is_causal=causal)
        s = torch.matmul(q, k.transpose(2, 3)) * scale
        if causal:
            s = s + torch.full((q.shape[2], k.shape[2]), float("-inf"), dtype=s.dtype).triu(1)
        return torch.matmul(torch.softmax(s, -1, dtype=torch.float32).to(q.dtype), v)

    class CLIPLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = layer_norm(), layer_norm()
            self.q, self.k, self.v, self.o = (linear(vH, vH, True, vdt) for _ in range(4))
            self.fc1, self.fc2 = linear(vH, vI, True, vdt), linear(vI, vH, True, vdt)

        def forward(self, x):
            B, T, _ = x.shape
            a_ = self.ln1(x)
            q, k, v = (m(a_).view(B, T, vNH, vhs).transpose(1, 2) for m in (self.q, self.k, self.v))
            x = x + self.o(attend(q, k, v, False, vhs ** -0.5).transpose(1, 2).reshape(B, T, vH))
            m = self.fc1(self.ln2(x))
            return x + self.fc2(m * torch.sigmoid(1.702 * m))  # quick_gelu

    class Vision(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = make(nn.Conv2d, 3, vH, patch, stride=patch, bias=False, dtype=vdt)
            self.cls = nn.Parameter(torch.empty(vH, dtype=vdt))
            self.pos = make(nn.Embedding, P + 1, vH, dtype=vdt)
            self.pre = layer_norm()
            self.layers = nn.ModuleList(CLIPLayer() for _ in range(vL - 1))  # hidden_states[-2]

        def forward(self, px):
            x = self.patch(px).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], 1, vH), x], 1) + self.pos.weight
            x = self.pre(x)
            for layer in self.layers:
                x = layer(x)
            return x[:, 1:].to(dt)

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(H, dtype=dt))

        def forward(self, x):
            x32 = x.float()
            x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)
            return self.weight * x32.to(dt)

    def rotate_half(x):
        return torch.cat([-x[..., hs // 2:], x[..., :hs // 2]], -1)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = RMSNorm(), RMSNorm()
            self.q, self.k, self.v, self.o = (linear(H, H) for _ in range(4))
            self.g, self.u, self.d = linear(H, I), linear(H, I), linear(I, H)
            self.ck = torch.zeros(1, NH, cap, hs, dtype=dt)
            self.cv = torch.zeros(1, NH, cap, hs, dtype=dt)

        def forward(self, x, cos, sin, past):
            B, T, _ = x.shape
            a_ = self.n1(x)
            q, k, v = (m(a_).view(B, T, NH, hs).transpose(1, 2) for m in (self.q, self.k, self.v))
            c, s = cos[past:past + T], sin[past:past + T]
            q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
            self.ck[:, :, past:past + T] = k
            self.cv[:, :, past:past + T] = v
            o = attend(q, self.ck[:, :, :past + T], self.cv[:, :, :past + T], T > 1, hs ** -0.5)
            y = x + self.o(o.transpose(1, 2).reshape(B, T, H))
            m = self.n2(y)
            return y + self.d(F.silu(self.g(m)) * self.u(m))

    t0 = time.perf_counter()
    with torch.no_grad():
        vision = Vision()
        proj = nn.Sequential(linear(vH, H, True), nn.GELU(), linear(H, H, True))
        gate = nn.Sequential(linear(P, 256, True), nn.GELU(), linear(256, 7, True))
        E = nn.Parameter(torch.empty(8, H, dtype=dt))
        embed = make(nn.Embedding, V, H)
        layers = nn.ModuleList(Layer() for _ in range(L))
        norm = RMSNorm()
        lm_head = linear(H, V)
        model = nn.ModuleList([vision, proj, gate, embed, layers, norm, lm_head])
        pool = torch.rand(1 << 22) * 0.1 - 0.05  # U(-0.05, 0.05), as ours
        pools = {dt: pool.to(dt), torch.float32: pool}
        for p in list(model.parameters()) + [E]:
            flat, src = p.view(-1), pools[p.dtype]
            for i in range(0, flat.numel(), src.numel()):
                k = min(flat.numel() - i, src.numel())
                flat[i:i + k].copy_(src[:k])
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, RMSNorm)):
                m.weight.fill_(1)
            if isinstance(m, nn.LayerNorm):
                m.bias.zero_()
        inv = 1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs))
        f = torch.outer(torch.arange(cap).float(), inv)
        e = torch.cat([f, f], -1)
        cos, sin = e.cos().to(dt), e.sin().to(dt)
        px = (torch.rand(1, 3, image, image) * 3 - 1.5).to(vdt)

        def tok(i):
            return 1 if i == 0 else 3 + (i * 104729) % (V - 3)

        before = torch.tensor([[tok(i) for i in range(a.before)]])
        after = torch.tensor([[tok(i) for i in range(a.before, a.before + a.after)]])
    build_s = time.perf_counter() - t0
    reset_ok = reset_peak()

    def llm(x, past):
        for layer in layers:
            x = layer(x, cos, sin, past)
        return lm_head(norm(x))

    with torch.no_grad():
        t0 = time.perf_counter()
        feats = vision(px)
        t1 = time.perf_counter()
        img = proj(feats)
        tb, ta = embed(before), embed(after)
        text = torch.cat([tb[:, 1:], ta], 1)
        dots = torch.bmm(img, text.float().mean(1).to(dt).unsqueeze(-1)).squeeze(-1)
        ind = torch.softmax(gate(dots).float(), -1).to(dt) @ E[:7] + E[7]
        x = torch.cat([tb[:, :1], ind.unsqueeze(1), tb[:, 1:], img, ta], 1)
        assert x.shape == (1, S, H), x.shape
        logits = llm(x, 0)
        t2 = time.perf_counter()
        token = int(logits[0, -1].argmax())
        t3 = time.perf_counter()
        steps = []
        for n in range(a.tokens):
            s0 = time.perf_counter()
            logits = llm(embed(torch.tensor([[token]])), S + n)
            token = int(logits[0, -1].argmax())
            steps.append(time.perf_counter() - s0)
    peak = peak_rss_bytes(reset_ok)
    encode_s, prefill_s = t1 - t0, t2 - t1
    print(f"torch_generate torch={torch.__version__} threads={torch.get_num_threads()} positions={S} tokens={a.tokens} "
          f"layers={L} vision_dtype={a.vision_dtype} build_s={build_s:.3f} encode_s={encode_s:.4f} prefill_s={prefill_s:.4f} ttft_s={t3 - t0:.4f} "
          f"decode_s_per_token={statistics.median(steps):.5f} peak_rss_GiB={peak / 2**30:.3f} "
          f"peak_reset={int(reset_ok)} steps={','.join(f'{t:.5f}' for t in steps)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
