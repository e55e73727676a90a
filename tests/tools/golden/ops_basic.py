"""Golden fixtures for the basic ops (include/aligngpt/ops/*.h), read by tests/test_ops.cpp.

Each recipe fills inputs and the upstream gradient dy with hashfill (so values are reproducible),
runs PyTorch / transformers 4.31 in float32 on the CPU, and stores inputs, outputs and input
gradients. Keys are "<op>.<tensor>"; all tensors are float32 except integer ids (int64).

    /usr/bin/python3 tests/tools/make_golden.py op_rms_norm op_layer_norm ...
"""
import torch
import torch.nn.functional as F
from transformers.activations import QuickGELUActivation
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from .common import hashfill, save


def _leaf(name, shape, a, offset=0.0):
    return (hashfill(name, shape, a) + offset).requires_grad_(True)


def _grads(y, dy, *xs):
    """Backward of y with upstream dy; returns the input gradients."""
    y.backward(dy)
    return [x.grad for x in xs]


def golden_op_rms_norm():
    # LLaMA's own module (mean of squares, eps inside sqrt, weight multiply after normalising).
    x = _leaf("rms_norm.x", (6, 48), 2.0)
    m = LlamaRMSNorm(48, eps=1e-5)
    with torch.no_grad():
        m.weight.copy_(hashfill("rms_norm.w", (48,), 0.5) + 1.0)
    y = m(x)
    dy = hashfill("rms_norm.dy", (6, 48), 1.0)
    dx, dw = _grads(y, dy, x, m.weight)
    return save("op_rms_norm", {"x": x, "w": m.weight, "y": y, "dy": dy, "dx": dx, "dw": dw})


def golden_op_layer_norm():
    # Offset inputs so the mean matters; torch.nn.LayerNorm semantics (biased variance, eps 1e-5).
    x = _leaf("layer_norm.x", (6, 40), 2.0, offset=3.0)
    w = _leaf("layer_norm.w", (40,), 0.5, offset=1.0)
    b = _leaf("layer_norm.b", (40,), 0.5)
    y = F.layer_norm(x, (40,), w, b, eps=1e-5)
    dy = hashfill("layer_norm.dy", (6, 40), 1.0)
    dx, dw, db = _grads(y, dy, x, w, b)
    return save("op_layer_norm", {"x": x, "w": w, "b": b, "y": y, "dy": dy, "dx": dx, "dw": dw, "db": db})


def golden_op_activations():
    out = {}
    fns = {"gelu": lambda x: F.gelu(x),                    # exact erf form (approximate='none')
           "quick_gelu": QuickGELUActivation(),            # CLIP: x * sigmoid(1.702 x)
           "silu": F.silu}
    for name, fn in fns.items():
        x = _leaf(name + ".x", (5, 64), 6.0)               # covers both tails
        y = fn(x)
        dy = hashfill(name + ".dy", (5, 64), 1.0)
        (dx,) = _grads(y, dy, x)
        out.update({name + ".x": x, name + ".y": y, name + ".dy": dy, name + ".dx": dx})
    g, u = _leaf("swiglu.g", (5, 64), 6.0), _leaf("swiglu.u", (5, 64), 2.0)
    y = F.silu(g) * u                                      # LlamaMLP: act_fn(gate_proj(x)) * up_proj(x)
    dy = hashfill("swiglu.dy", (5, 64), 1.0)
    dg, du = _grads(y, dy, g, u)
    out.update({"swiglu.g": g, "swiglu.u": u, "swiglu.y": y, "swiglu.dy": dy, "swiglu.dg": dg, "swiglu.du": du})
    return save("op_activations", out)


def golden_op_softmax():
    x = _leaf("softmax.x", (2, 5, 33), 4.0)
    y = torch.softmax(x, dim=-1)
    dy = hashfill("softmax.dy", (2, 5, 33), 1.0)
    (dx,) = _grads(y, dy, x)
    return save("op_softmax", {"x": x, "y": y, "dy": dy, "dx": dx})


def golden_op_embedding():
    # padding_idx 0 as LLaMA; ids contain the padding row and repeated ids.
    w = _leaf("embedding.w", (20, 16), 1.0)
    ids = torch.tensor([[3, 0, 7, 3], [19, 0, 3, 5], [7, 7, 0, 12]], dtype=torch.int64)
    y = F.embedding(ids, w, padding_idx=0)
    dy = hashfill("embedding.dy", (3, 4, 16), 1.0)
    (dw,) = _grads(y, dy, w)
    assert torch.all(dw[0] == 0)
    return save("op_embedding", {"w": w, "ids": ids, "y": y, "dy": dy, "dw": dw})


def golden_op_cross_entropy():
    # Rows 2, 5 and 6 are ignored (-100); the upstream gradient is 0.75 rather than 1.
    z = _leaf("cross_entropy.z", (9, 37), 3.0)
    t = torch.tensor([4, 36, -100, 0, 17, -100, -100, 9, 4], dtype=torch.int64)
    loss = F.cross_entropy(z, t, ignore_index=-100, reduction="mean")
    dloss = torch.tensor(0.75)
    (dz,) = _grads(loss, dloss, z)
    return save("op_cross_entropy", {"z": z, "targets": t, "loss": loss, "dloss": dloss, "dz": dz})


def golden_op_elementwise():
    a, b = _leaf("ew.a", (7, 12), 2.0), _leaf("ew.b", (7, 12), 2.0)
    r = _leaf("ew.r", (12,), 1.0)
    out = {"a": a, "b": b, "r": r}
    for name, fn in {"add": lambda: a + b, "mul": lambda: a * b, "scale": lambda: 0.37 * a,
                     "add_row": lambda: a + r}.items():
        for v in (a, b, r):
            v.grad = None
        y = fn()
        dy = hashfill("ew." + name + ".dy", (7, 12), 1.0)
        y.backward(dy)
        out.update({name + ".y": y, name + ".dy": dy})
        for key, v in (("da", a), ("db", b), ("dr", r)):
            if v.grad is not None:
                out[name + "." + key] = v.grad.clone()
    return save("op_elementwise", out, metadata={"scale": "0.37"})


def golden_op_shape():
    out = {}
    xs = [_leaf(f"concat.x{k}", (2, n, 4), 1.0) for k, n in enumerate((3, 5, 1))]
    y = torch.cat(xs, dim=1)
    dy = hashfill("concat.dy", tuple(y.shape), 1.0)
    grads = _grads(y, dy, *xs)
    out.update({f"concat.x{k}": x for k, x in enumerate(xs)})
    out.update({f"concat.dx{k}": g for k, g in enumerate(grads)})
    out.update({"concat.y": y, "concat.dy": dy})

    x = _leaf("slice.x", (3, 8, 5), 1.0)
    y = x[:, 2:6, :]
    dy = hashfill("slice.dy", (3, 4, 5), 1.0)
    (dx,) = _grads(y, dy, x)
    out.update({"slice.x": x, "slice.y": y, "slice.dy": dy, "slice.dx": dx})

    x = _leaf("index_rows.x", (8, 6), 1.0)
    rows = torch.tensor([4, 0, 4, 2, 7, 4], dtype=torch.int64)     # row 4 three times
    y = torch.index_select(x, 0, rows)
    dy = hashfill("index_rows.dy", (6, 6), 1.0)
    (dx,) = _grads(y, dy, x)
    out.update({"index_rows.x": x, "index_rows.rows": rows, "index_rows.y": y, "index_rows.dy": dy,
                "index_rows.dx": dx})

    x = _leaf("transpose.x", (2, 3, 4, 5), 1.0)
    y = x.transpose(1, 3).contiguous()
    dy = hashfill("transpose.dy", tuple(y.shape), 1.0)
    (dx,) = _grads(y, dy, x)
    out.update({"transpose.x": x, "transpose.y": y, "transpose.dy": dy, "transpose.dx": dx})
    return save("op_shape", out)


def golden_op_reduce():
    out = {}
    x = _leaf("reduce.x", (3, 5, 4), 2.0)
    cases = {"sum_all": lambda: x.sum(), "mean_all": lambda: x.mean(),
             "sum_dim1": lambda: x.sum(dim=1), "mean_dim0": lambda: x.mean(dim=0)}
    for name, fn in cases.items():
        x.grad = None
        y = fn()
        dy = hashfill("reduce." + name + ".dy", tuple(y.shape), 1.0)
        y.backward(dy)
        out.update({name + ".y": y, name + ".dy": dy, name + ".dx": x.grad.clone()})
    out["x"] = x
    return save("op_reduce", out)
