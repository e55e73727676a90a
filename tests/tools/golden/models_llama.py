"""Golden recipes for include/aligngpt/models/llama.h (tests/test_llama.cpp). Every output comes
from the REAL transformers 4.31 LlamaForCausalLM / LlamaDecoderLayer in fp32 on CPU.

Weights are hashfill(<HF key>, shape, a) (tests/tools/golden/common.py), so the C++ side can either
load the committed model.safetensors (llama_tiny) or refill the same numbers by name (llama_gqa and
the full-width layer, whose 202 M weights are never committed).

Files written under tests/golden/:
  llama_tiny/{config.json, model.safetensors}   LlamaForCausalLM.save_pretrained (MHA, 2 layers)
  llama_tiny.safetensors     ids/lengths of a right-padded batch of 3, every layer's output, logits,
                             greedy continuations (HF generate, do_sample=False) of two prompts
  llama_gqa/config.json      GQA variant (4 heads, 2 kv heads, linear RoPE scaling x2, eps 1e-6)
  llama_gqa.safetensors      same contents as llama_tiny.safetensors, weights not committed
  llama_layer_full.safetensors   one LLaMA-7B decoder layer (4096, 32x128, 11008), 8 tokens: output
"""
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from .common import GOLDEN_DIR, hashfill, save

# -- how every parameter is filled (mirrored in tests/test_llama.cpp: fill_like_recipe) ----------
#   *norm.weight (input_layernorm, post_attention_layernorm, model.norm):  1 + hashfill(key, 0.2)
#   model.embed_tokens.weight:  hashfill(key, 1.0)
#   lm_head.weight:             hashfill(key, 3 / sqrt(hidden))   (peaked logits: clear argmax)
#   any other weight [out, in]: hashfill(key, 1 / sqrt(in))       (PyTorch's default bound)
SEED = 0


def fill_value(key: str, shape, seed: int = SEED) -> torch.Tensor:
    if key.endswith("norm.weight"):
        return 1.0 + hashfill(key, shape, 0.2, seed)
    if key == "model.embed_tokens.weight":
        return hashfill(key, shape, 1.0, seed)
    if key == "lm_head.weight":
        return hashfill(key, shape, 3.0 / shape[1] ** 0.5, seed)
    return hashfill(key, shape, 1.0 / shape[1] ** 0.5, seed)


def fill_module(module: torch.nn.Module, prefix: str = "", seed: int = SEED) -> None:
    with torch.no_grad():
        for key, p in module.named_parameters():
            p.copy_(fill_value(prefix + key, tuple(p.shape), seed))


def tiny_config(**kw) -> LlamaConfig:
    c = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
             pad_token_id=0, tie_word_embeddings=False)
    c.update(kw)
    return LlamaConfig(**c)


def save_model_dir(model, name: str, weights: bool) -> str:
    d = os.path.join(GOLDEN_DIR, name)
    model.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors") or (f == "model.safetensors" and not weights):
            os.remove(os.path.join(d, f))
    return d


def batch_ids(V: int, lengths, tag: str):
    """Right-padded ids [B, T] (pad 0) whose tokens are 3..V-1 (no BOS/EOS/pad inside), BOS first."""
    B, T = len(lengths), max(lengths)
    raw = hashfill(tag, (B, T), 1.0)
    ids = (3 + ((raw + 1.0) * 0.5 * (V - 3)).floor().clamp(0, V - 4)).to(torch.int64)
    ids[:, 0] = 1
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = 0
    return ids, mask


def llama_recipe(name: str, config: LlamaConfig, weights: bool) -> str:
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    fill_module(model)
    save_model_dir(model, name, weights)
    L = config.num_hidden_layers

    lengths = [12, 7, 10]
    ids, mask = batch_ids(config.vocab_size, lengths, name + ".ids")
    outs = {}
    hooks = [model.model.layers[i].register_forward_hook(
        lambda m, inp, out, i=i: outs.__setitem__(i, out[0].detach().clone())) for i in range(L)]
    with torch.no_grad():
        # positions 0..T-1 for every row (right padding keeps the valid prefix at 0..len-1)
        logits = model(input_ids=ids, attention_mask=mask).logits
    for h in hooks:
        h.remove()

    t = {"ids": ids, "lengths": torch.tensor(lengths, dtype=torch.int64), "logits": logits}
    for i in range(L):
        t[f"layers.{i}.out"] = outs[i]

    # greedy decoding: HF generate with do_sample=False, batch 1, stops at eos (2) or 32 new tokens
    for p, n in enumerate([5, 9]):
        prompt, _ = batch_ids(config.vocab_size, [n], f"{name}.prompt{p}")
        with torch.no_grad():
            gen = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32,
                                 do_sample=False, num_beams=1, eos_token_id=2, pad_token_id=0)
        t[f"prompt{p}"] = prompt[0]
        t[f"generated{p}"] = gen[0, n:]
    return save(name, t)


def golden_llama_tiny():
    return llama_recipe("llama_tiny", tiny_config(), weights=True)


def golden_llama_gqa():
    return llama_recipe("llama_gqa", tiny_config(num_key_value_heads=2, rms_norm_eps=1e-6,
                                                   rope_scaling={"type": "linear", "factor": 2.0}),
                        weights=False)


def golden_llama_layer_full():
    """One LLaMA-7B decoder layer (hidden 4096, 32 heads x 128, intermediate 11008) on 8 tokens at
    positions 0..7. Names are the HF keys of layer 0; the input is hashfill("llama_layer_full.x")."""
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                         max_position_embeddings=4096, rms_norm_eps=1e-5, vocab_size=32000)
    layer = LlamaDecoderLayer(config).eval()
    fill_module(layer, prefix="model.layers.0.")
    T = 8
    x = hashfill("llama_layer_full.x", (1, T, 4096), 1.0)
    causal = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None]
    with torch.no_grad():
        y = layer(x, attention_mask=causal, position_ids=torch.arange(T)[None])[0]
    return save("llama_layer_full", {"output": y})
