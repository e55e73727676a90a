#!/usr/bin/python3
"""PyTorch side of bench/bench_train.cpp: one training step (forward + backward of the loss, no
optimizer), fp32, the same shapes, tokens and trainable sets as ours. Plain torch modules only
(no transformers), so any torch >= 1.13 runs it.

Workloads (--workload):
  stage1/small, stage2/small   a small AlignGPT: token embeddings, projector mlp2x_gelu
        Linear(Dv,H)-GELU-Linear(H,H) on CLIP features [B, P, Dv], the alignment indicator, LLaMA
        decoder layers (HF LlamaDecoderLayer math: RMSNorm, q/k/v/o, RoPE rotate_half, causal
        attention, SwiGLU MLP), final RMSNorm, lm_head, token-mean cross-entropy of logits[t]
        against labels[t+1]. Each row is BOS | indicator | text before the image | P image tokens |
        text after it, as AlignGPT splices it.
        stage 1: indicator = E[level]; projector + indicators trainable, the LLM frozen (dX flows).
        stage 2: indicator = w E[0:7] + E[7], w = softmax(MLP(P->256->7)(image tokens . mean of the
        text embeddings without BOS)); LLM (embeddings, layers, norm, lm_head) + projector + gate
        trainable, the indicators frozen.
  stage1/7b_layer, stage2/7b_layer   projector Linear(lDv,lH)-GELU-Linear(lH,lH) + one decoder layer on
        lT tokens, loss = mean of the layer's output; stage 1 the layer frozen, stage 2 all trainable.

Attention: F.scaled_dot_product_attention(is_causal=True) where torch has it (2.x), else the matmul
/ softmax / matmul of HF's LlamaAttention (torch 1.13).

--shapes H,L,NH,I,V,Dv,P,B,n_text,n_before,lH,lNH,lI,lDv,lT (bench_train passes its own).
Token i of row b: 3 + (b * 7919 + i * 104729) % (V - 3), BOS = 1 at i = 0; the image placeholder
sits before text token n_before; labels are the tokens from n_before on (the rest ignored).

Threads: torch.set_num_threads(--threads); the caller also sets OMP_NUM_THREADS, MKL_NUM_THREADS
and OPENBLAS_NUM_THREADS (Debian's torch 1.13 sizes OpenBLAS's pool from that variable only).

Output (parsed by bench_train): one warm-up step, then --reps timed steps:
  torch_train workload=stage2/small torch=2.5.1 threads=2 tokens=1282 median_s=0.41 runs=0.41,0.40,0.42
Exit status 2 if torch cannot be imported.
"""
import argparse
import math
import statistics
import sys
import time

DEFAULT_SHAPES = "256,4,8,688,2000,128,576,2,64,6,4096,32,11008,1024,600"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="stage2/small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - report any import failure and let the caller go on
        print(f"torch_train unavailable: {type(e).__name__}: {e}", flush=True)
        return 2

    H, L, NH, I, V, Dv, P, B, n_text, n_before, lH, lNH, lI, lDv, lT = (int(x) for x in a.shapes.split(","))
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    sdpa = getattr(F, "scaled_dot_product_attention", None)

    class RMSNorm(nn.Module):
        def __init__(self, n, eps=1e-6):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))
            self.eps = eps

        def forward(self, x):
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope_cos_sin(T, hs):
        inv = 1.0 / (10000 ** (torch.arange(0, hs, 2).float() / hs))
        f = torch.outer(torch.arange(T).float(), inv)
        e = torch.cat([f, f], -1)
        return e.cos(), e.sin()

    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], -1)

    class Layer(nn.Module):
        def __init__(self, h, nh, inter):
            super().__init__()
            self.h, self.nh, self.hs = h, nh, h // nh
            self.n1, self.n2 = RMSNorm(h), RMSNorm(h)
            self.q, self.k, self.v, self.o = (nn.Linear(h, h, bias=False) for _ in range(4))
            self.g, self.u = nn.Linear(h, inter, bias=False), nn.Linear(h, inter, bias=False)
            self.d = nn.Linear(inter, h, bias=False)

        def forward(self, x, cos, sin):
            Bn, Tn, _ = x.shape
            a = self.n1(x)
            q = self.q(a).view(Bn, Tn, self.nh, self.hs).transpose(1, 2)
            k = self.k(a).view(Bn, Tn, self.nh, self.hs).transpose(1, 2)
            v = self.v(a).view(Bn, Tn, self.nh, self.hs).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if sdpa is not None:
                o = sdpa(q, k, v, is_causal=True)
            else:
                s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.hs)
                s = s + torch.full((Tn, Tn), float("-inf")).triu(1)
                o = torch.matmul(torch.softmax(s, -1), v)
            y = x + self.o(o.transpose(1, 2).reshape(Bn, Tn, self.h))
            m = self.n2(y)
            return y + self.d(F.silu(self.g(m)) * self.u(m))

    def projector(dv, h):
        return nn.Sequential(nn.Linear(dv, h), nn.GELU(), nn.Linear(h, h))

    stage, kind = a.workload.split("/") if "/" in a.workload else ("", "")
    if stage not in ("stage1", "stage2") or kind not in ("small", "7b_layer"):
        print(f"torch_train unknown workload {a.workload}", flush=True)
        return 2

    if kind == "small":
        embed = nn.Embedding(V, H, padding_idx=0)
        layers = nn.ModuleList(Layer(H, NH, I) for _ in range(L))
        norm = RMSNorm(H)
        lm_head = nn.Linear(H, V, bias=False)
        proj = projector(Dv, H)
        E = nn.Parameter(torch.empty(8, H).uniform_(-1, 1) * math.sqrt(6 / (H + 8)))
        gate = nn.Sequential(nn.Linear(P, 256), nn.GELU(), nn.Linear(256, 7))
        llm = [embed, layers, norm, lm_head]
        for m in llm + [proj, gate]:
            m.requires_grad_(stage == "stage2" or m is proj)
        E.requires_grad_(stage == "stage1")
        params = [p for m in llm + [proj, gate] for p in m.parameters()] + [E]

        ids = torch.tensor([[1 if i == 0 else 3 + (b * 7919 + i * 104729) % (V - 3) for i in range(n_text)]
                            for b in range(B)])
        levels = torch.tensor([7 if b % 2 else 3 for b in range(B)])
        before, after = ids[:, :n_before], ids[:, n_before:]
        S = n_text + P + 1
        ignore = torch.full((B, 1 + n_before + P), -100, dtype=torch.long)  # BOS, indicator, c0[1:], image
        labels = torch.cat([ignore, after], 1)
        feats = torch.rand(B, P, Dv) * 2 - 1
        cos, sin = rope_cos_sin(S, H // NH)
        tokens = B * S

        def loss_fn():
            tb, ta = embed(before), embed(after)
            img = proj(feats)
            if stage == "stage1":
                ind = E[levels]
            else:
                text = torch.cat([tb[:, 1:], ta], 1)
                mean = text.sum(1) / (text.shape[1] + 1e-8)
                dots = torch.bmm(img, mean.unsqueeze(-1)).squeeze(-1)
                ind = torch.softmax(gate(dots), -1) @ E[:7] + E[7]
            x = torch.cat([tb[:, :1], ind.unsqueeze(1), tb[:, 1:], img, ta], 1)
            assert x.shape == (B, S, H), x.shape
            for layer in layers:
                x = layer(x, cos, sin)
            logits = lm_head(norm(x))
            return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    else:
        proj = projector(lDv, lH)
        layer = Layer(lH, lNH, lI)
        layer.requires_grad_(stage == "stage2")
        params = list(proj.parameters()) + list(layer.parameters())
        feats = torch.rand(1, lT, lDv) * 2 - 1
        cos, sin = rope_cos_sin(lT, lH // lNH)
        tokens = lT

        def loss_fn():
            return layer(proj(feats), cos, sin).mean()

    def step():
        for p in params:
            p.grad = None
        loss_fn().backward()

    step()  # warm-up (allocator, thread pools)
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"torch_train workload={a.workload} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"tokens={tokens} median_s={statistics.median(times):.4f} runs={','.join(f'{t:.4f}' for t in times)}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
