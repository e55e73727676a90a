"""Shared helpers for the golden-fixture recipes (run by hand, never by tests or CI).

hashfill() reproduces include/aligngpt/rng.h bit for bit, so full-size weights can be filled
identically on both sides instead of being committed.
"""
import os

import numpy as np
import torch
from safetensors.torch import save_file

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "golden")
M64 = (1 << 64) - 1


def splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(M64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for c in s.encode("utf-8"):
        h ^= c
        h = (h * 0x100000001B3) & M64
    return h


def uniform(seed: int, stream: int, n: int, a: float) -> np.ndarray:
    """float32 values (u*2-1)*a, u = (bits >> 40) * 2^-24, as rng::uniform in rng.h."""
    with np.errstate(over="ignore"):
        k = splitmix64(np.array([seed], dtype=np.uint64))[0]
        k = splitmix64(np.array([k ^ np.uint64(stream)], dtype=np.uint64))[0]
        bits = splitmix64(np.arange(n, dtype=np.uint64) ^ k)
    u = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    return (u * np.float32(2.0) - np.float32(1.0)) * np.float32(a)


def hashfill(name: str, shape, a: float, seed: int = 0) -> torch.Tensor:
    """The tensor rng::fill_uniform(seed, fnv1a64(name), a) gives in C++ (tests/support/golden.h)."""
    n = int(np.prod(shape)) if len(shape) else 1
    return torch.from_numpy(uniform(seed, fnv1a64(name), n, a).reshape(shape).copy())


def save(name: str, tensors: dict, metadata: dict | None = None) -> str:
    """Writes tests/golden/<name>.safetensors (contiguous CPU tensors; float64 kept as F64)."""
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    path = os.path.join(GOLDEN_DIR, name + ".safetensors")
    out = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    save_file(out, path, metadata=metadata)
    return path
