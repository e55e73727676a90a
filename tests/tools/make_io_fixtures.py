#!/usr/bin/env python3
"""Writes the real-file fixtures of tests/test_io_torch_bin.cpp into tests/golden/io/ (run by hand,
not in CI; the outputs are committed, < 500 KB in all):

  /usr/bin/python3 tests/tools/make_io_fixtures.py        (torch 1.13, transformers 4.31, safetensors)

torch_save.bin                   torch.save of a state_dict (zip format): f32, bf16, i64, a storage
                                 shared by two views, a non-zero storage_offset, a transposed
                                 (non-contiguous) view, a Parameter, and OrderedDict _metadata (BUILD)
torch_save.expected.safetensors  the same tensors made contiguous, written by safetensors.torch
llama_bin/ llama_st/             save_pretrained of a tiny LlamaForCausalLM, safe_serialization False/True
llama_bin_sharded/ llama_st_sharded/   the same with max_shard_size, so *.index.json and several shards
The C++ tests check that every copy of a tensor is bit-identical across the formats.
"""
import collections
import os
import shutil

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "io")


def torch_save_fixture():
    g = torch.Generator().manual_seed(1234)
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 3, generator=g))
    sd = lin.state_dict()  # an OrderedDict carrying _metadata -> pickled with BUILD
    assert hasattr(sd, "_metadata")
    base = torch.randn(10, generator=g).to(torch.bfloat16)
    sd["bf16.view_a"] = base[2:6]            # shared storage, storage_offset 2
    sd["bf16.view_b"] = base[4:].view(2, 3)  # same storage, overlapping view, offset 4
    m = torch.randn(3, 4, generator=g)
    sd["f32.matrix"] = m
    sd["f32.transposed"] = m.t()             # same storage, strides (1, 4): non-contiguous
    sd["i64.ids"] = torch.tensor([[1, -2, 3], [2**40, -(2**62), 0]], dtype=torch.int64)
    sd["f32.scalar"] = torch.tensor(3.5)
    sd["f32.empty"] = torch.zeros(0, 4)
    sd["param"] = torch.nn.Parameter(torch.tensor([0.25, -8.0]))
    torch.save(sd, os.path.join(OUT, "torch_save.bin"))
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()},
              os.path.join(OUT, "torch_save.expected.safetensors"))


def llama_fixtures():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                      num_attention_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    for name, safe, shard in [("llama_bin", False, "10GB"), ("llama_st", True, "10GB"),
                              ("llama_bin_sharded", False, "4KB"), ("llama_st_sharded", True, "4KB")]:
        d = os.path.join(OUT, name)
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=safe, max_shard_size=shard)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(d, extra)):
                os.remove(os.path.join(d, extra))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch_save_fixture()
    llama_fixtures()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")
    assert total < 500_000
