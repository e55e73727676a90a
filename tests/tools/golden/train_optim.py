"""Golden fixtures for include/aligngpt/train/optim.h and io/torch_bin_writer.h (tests/test_train_optim.cpp,
tests/test_torch_bin_writer.cpp).

golden_train_optim: three small parameters (a decayed weight, a bias and a norm weight, as HF's two
groups split them) get hashfilled gradients for 6 steps; torch.optim.AdamW (torch 1.13: mul_/add_
first moment) and torch 2.x's _single_tensor_adamw written out with the same torch ops (lerp_ first
moment) update them with the lr of transformers.get_scheduler. Saved per run: lr per step (f64) and
params / exp_avg / exp_avg_sq after every step. Also the lr of each schedule over 50 steps and
clip_grad_norm_ totals and clipped gradients.

golden_torch_bin_written_by_cpp: loads tests/golden/train_optim/written_by_cpp.bin (written by the
C++ writer: run the test binary with ALIGNGPT_WRITE_TORCH_BIN_GOLDEN=1) with
torch.load(weights_only=True), checks every value, and checks that its data.pkl is byte for byte
what torch.save pickles for the same dict.

    /usr/bin/python3 tests/tools/make_golden.py train_optim torch_bin_written_by_cpp
"""
import io
import math
import re
import os
import warnings
import zipfile
from collections import OrderedDict

import torch
from transformers import get_scheduler

from .common import GOLDEN_DIR, hashfill, save

PARAMS = [("layers.0.mlp.weight", (3, 37)), ("layers.0.mlp.bias", (37,)), ("layers.0.input_layernorm.weight", (37,))]
STEPS = 6
BASE_LR = 2e-3
WARMUP_RATIO = 0.34  # ceil(0.34 * 6) = 3 warmup steps


def _grad(k, name, shape):
    return hashfill(f"optim.g{k}.{name}", shape, 0.05 * (k + 1))


def _adamw2_step(params, grads, state, lr, wd_of, b1=0.9, b2=0.999, eps=1e-8):
    """torch 2.x torch/optim/adamw.py _single_tensor_adamw (foreach/fused off), with torch's own kernels."""
    for p, g, s, wd in zip(params, grads, state, wd_of):
        s["step"] += 1
        p.mul_(1 - lr * wd)
        s["exp_avg"].lerp_(g, 1 - b1)
        s["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        step = float(s["step"])
        bc1 = 1 - b1**step
        bc2 = 1 - b2**step
        step_size = lr / bc1
        denom = (s["exp_avg_sq"].sqrt() / math.sqrt(bc2)).add_(eps)
        p.addcdiv_(s["exp_avg"], denom, value=-step_size)


def _run(out, tag, sched, wd, rule):
    ps = [hashfill(f"optim.p.{n}", s, 1.0).requires_grad_(True) for n, s in PARAMS]
    wd_of = [wd, 0.0, 0.0]  # HF groups: bias and norm weight get no decay
    groups = [{"params": [ps[0]], "weight_decay": wd}, {"params": ps[1:], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=BASE_LR, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    warm = math.ceil(STEPS * WARMUP_RATIO)
    sch = get_scheduler(sched, opt, num_warmup_steps=warm, num_training_steps=STEPS)
    state = [{"step": 0, "exp_avg": torch.zeros(s), "exp_avg_sq": torch.zeros(s)} for _, s in PARAMS]
    lrs, hist = [], {n: {"p": [], "m": [], "v": []} for n, _ in PARAMS}
    for k in range(STEPS):
        lr = opt.param_groups[0]["lr"]
        lrs.append(lr)
        for p, (n, s) in zip(ps, PARAMS):
            p.grad = _grad(k, n, s)
        if rule == "mul_add":
            opt.step()
        else:
            with torch.no_grad():
                _adamw2_step(ps, [p.grad for p in ps], state, lr, wd_of)
        sch.step()
        for i, (n, _) in enumerate(PARAMS):
            st = opt.state[ps[i]] if rule == "mul_add" else state[i]
            hist[n]["p"].append(ps[i].detach().clone())
            hist[n]["m"].append(st["exp_avg"].clone())
            hist[n]["v"].append(st["exp_avg_sq"].clone())
    out[f"{tag}.lr"] = torch.tensor(lrs, dtype=torch.float64)
    for n, _ in PARAMS:
        for f in ("p", "m", "v"):
            out[f"{tag}.{n}.{f}"] = torch.stack(hist[n][f])


def golden_train_optim():
    # the lerp runs step the scheduler without optimizer.step(): torch warns, harmlessly
    warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
    out = {}
    for n, s in PARAMS:
        out[f"init.{n}"] = hashfill(f"optim.p.{n}", s, 1.0)
        for k in range(STEPS):
            out[f"grad{k}.{n}"] = _grad(k, n, s)
    for sched in ("constant", "constant_with_warmup", "linear", "cosine"):
        _run(out, f"mul_add.{sched}.wd", sched, 0.1, "mul_add")
    _run(out, "mul_add.cosine.nowd", "cosine", 0.0, "mul_add")
    _run(out, "lerp.cosine.wd", "cosine", 0.1, "lerp")
    _run(out, "lerp.linear.nowd", "linear", 0.0, "lerp")
    # schedules over a longer run: T = 50, warmup ceil(0.03 * 50) = 2 (TrainingArguments.get_warmup_steps)
    for sched in ("constant", "constant_with_warmup", "linear", "cosine"):
        opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
        sch = get_scheduler(sched, opt, num_warmup_steps=math.ceil(50 * 0.03), num_training_steps=50)
        lrs = []
        for _ in range(50):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        out[f"sched.{sched}"] = torch.tensor(lrs, dtype=torch.float64)
    # clip_grad_norm_ (norm_type 2) on the step-0 gradients scaled up, clipped (max 1) and not (max 100)
    for tag, max_norm in (("clip1", 1.0), ("clip100", 100.0)):
        ps = [torch.zeros(s, requires_grad=True) for _, s in PARAMS]
        for p, (n, s) in zip(ps, PARAMS):
            p.grad = _grad(0, n, s) * 40.0
            out[f"{tag}.in.{n}"] = p.grad.clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        out[f"{tag}.total"] = total.reshape(1)
        for p, (n, _) in zip(ps, PARAMS):
            out[f"{tag}.out.{n}"] = p.grad.clone()
    return save("train_optim", out)


def golden_torch_bin_written_by_cpp():
    path = os.path.join(GOLDEN_DIR, "train_optim", "written_by_cpp.bin")
    sd = torch.load(path, weights_only=True)
    expect = _written_by_cpp_expected()
    assert list(sd.keys()) == list(expect.keys()), (list(sd.keys()), list(expect.keys()))
    for k, v in expect.items():
        got = sd[k]
        assert got.dtype == v.dtype and got.shape == v.shape, (k, got.dtype, got.shape, v.dtype, v.shape)
        assert torch.equal(got, v), k
    buf = io.BytesIO()
    torch.save(OrderedDict(expect), buf)
    ours = zipfile.ZipFile(path).read("archive/data.pkl")
    theirs = zipfile.ZipFile(buf).read("archive/data.pkl")
    assert ours == theirs, "data.pkl differs from torch.save's pickle"
    return f"{path}: {len(sd)} tensors load with weights_only=True and equal; data.pkl equals torch.save's"


def _written_by_cpp_expected():
    """The dict tests/test_torch_bin_writer.cpp writes (same hashfill names)."""
    return OrderedDict(
        [
            ("model.embed_tokens.weight", hashfill("tbw.embed", (4, 3), 1.0)),
            ("model.norm.weight", hashfill("tbw.norm", (3,), 1.0).to(torch.bfloat16)),
            ("scalar", hashfill("tbw.scalar", (), 2.0)),
            ("empty", torch.zeros(0, 5)),
            ("big_dims", hashfill("tbw.big", (1, 300), 1.0)),
        ]
    )
