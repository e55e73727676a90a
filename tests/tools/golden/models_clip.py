"""Golden recipes for include/aligngpt/models/{clip.h, clip_vision.h, clip_text.h, projector.h}
(tests/test_clip.cpp). Every model output comes from the REAL transformers 4.31 classes
(CLIPVisionModel, CLIPModel, CLIPEncoderLayer) in fp32 on CPU; the projector is built exactly as
AlignGPT's mm_projector_builder.py builds it (nn.Sequential of Linear / GELU).

Weights are hashfill(<HF key>, shape, a) (tests/tools/golden/common.py), so the C++ side can
either load the committed model.safetensors (tiny models) or refill the same numbers by name
(the full-width layer, whose 12.6 M weights are never committed).

Files written under tests/golden/:
  clip_vision_tiny/{config.json, model.safetensors}    CLIPVisionModel.save_pretrained, 2 layers
  clip_vision_tiny.safetensors                         pixels, every hidden state, pooled, features
  clip_vision_3l/{...}, clip_vision_3l.safetensors     3 layers (checks up_to_layer)
  clip_model_tiny/{...}, clip_model_tiny.safetensors   CLIPModel: both towers, projections, logits
  clip_layer_full.safetensors                          one ViT-L/14-336 layer (1024, 16 heads, 577
                                                       tokens): every 4th output row + row 576
  clip_projector.safetensors                           linear / mlp2x_gelu / mlp3x_gelu / identity
"""
import json
import os
import re

import torch
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from .common import GOLDEN_DIR, hashfill, save

# -- how every parameter is filled (the full-width test in tests/test_clip.cpp refills it by name) ---
#   LayerNorm weight:  1 + hashfill(key, 0.2)          LayerNorm bias: hashfill(key, 0.1)
#   class/position/token embeddings: hashfill(key, 0.5)
#   logit_scale: 2.6592 (transformers' init value, ln(1/0.07))
#   any other weight or bias [out, in...]: hashfill(key, 1/sqrt(fan_in))  (PyTorch's default bound)
LN_RE = re.compile(r"(layer_norm\d|layrnorm|layernorm|final_layer_norm)\.(weight|bias)$")


def fill_value(key: str, shape) -> torch.Tensor:
    m = LN_RE.search(key)
    if m:
        return (1.0 + hashfill(key, shape, 0.2)) if m.group(2) == "weight" else hashfill(key, shape, 0.1)
    if "embedding" in key and "patch_embedding" not in key:
        return hashfill(key, shape, 0.5)
    if key == "logit_scale":
        return torch.tensor(2.6592)
    return hashfill(key, shape, 1.0 / (int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else shape[0]) ** 0.5)


def fill_module(module: nn.Module, prefix: str = "") -> None:
    with torch.no_grad():
        for key, p in module.named_parameters():
            full = prefix + key
            if full.endswith(".bias") and not LN_RE.search(full):
                # a Linear bias uses the bound of its weight (fan_in of the weight)
                w = dict(module.named_parameters())[key[: -len("bias")] + "weight"]
                p.copy_(hashfill(full, tuple(p.shape), 1.0 / w.shape[1] ** 0.5))
            else:
                p.copy_(fill_value(full, tuple(p.shape)).reshape(p.shape))


def save_model_dir(model, name: str) -> str:
    d = os.path.join(GOLDEN_DIR, name)
    model.save_pretrained(d, safe_serialization=True)
    # keep only what the C++ tests read; the config is pretty-printed JSON from transformers.
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    return d


def pixels(name: str, B: int, S: int) -> torch.Tensor:
    return hashfill(name, (B, 3, S, S), 2.0)


def vision_config(layers: int) -> CLIPVisionConfig:
    # head_dim 8; 28/14 -> 2x2 = 4 patches, 5 tokens; intermediate 64 (not 4x to catch a mixup)
    return CLIPVisionConfig(hidden_size=32, intermediate_size=72, num_hidden_layers=layers,
                            num_attention_heads=4, image_size=28, patch_size=14, projection_dim=16)


def vision_recipe(name: str, layers: int, B: int) -> str:
    model = CLIPVisionModel(vision_config(layers)).eval()
    fill_module(model)
    px = pixels(name + ".pixels", B, 28)
    with torch.no_grad():
        out = model(pixel_values=px, output_hidden_states=True)
    t = {"pixels": px, "pooled": out.pooler_output}
    for i, h in enumerate(out.hidden_states):
        t[f"hidden_states.{i}"] = h
    # what AlignGPT's CLIPVisionTower.feature_select does (select_layer -2)
    t["features.patch"] = out.hidden_states[-2][:, 1:].clone()
    t["features.cls_patch"] = out.hidden_states[-2].clone()
    save_model_dir(model, name)
    return save(name, t)


def golden_clip_vision_tiny():
    return vision_recipe("clip_vision_tiny", layers=2, B=2)


def golden_clip_vision_3l():
    return vision_recipe("clip_vision_3l", layers=3, B=1)


def golden_clip_model_tiny():
    text = dict(vocab_size=99, hidden_size=40, intermediate_size=80, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=12, eos_token_id=98, bos_token_id=97,
                pad_token_id=0)
    vis = dict(hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
               image_size=28, patch_size=14)
    cfg = CLIPConfig(text_config=text, vision_config=vis, projection_dim=24)
    model = CLIPModel(cfg).eval()
    fill_module(model)
    px = pixels("clip_model_tiny.pixels", 3, 28)
    # 4 captions of lengths 10, 6, 3, 8 in a [4, 10] batch. As the OpenAI CLIP tokenizer does,
    # padding repeats <|endoftext|> (98 here, the largest id), so the EOT position is the FIRST
    # argmax; attention_mask marks padding. Caption 2 has a higher id than EOT nowhere.
    T = 10
    lengths = [10, 6, 3, 8]
    ids = torch.full((4, T), 98, dtype=torch.int64)
    mask = torch.zeros((4, T), dtype=torch.int64)
    for b, n in enumerate(lengths):
        body = [(7 * b + 13 * j + 5) % 96 + 1 for j in range(n - 2)]
        ids[b, :n] = torch.tensor([97] + body + [98])
        mask[b, :n] = 1
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=px, output_hidden_states=True)
    t = {"pixels": px, "input_ids": ids, "attention_mask": mask,
         "image_embeds": out.image_embeds, "text_embeds": out.text_embeds,
         "logits_per_image": out.logits_per_image, "cosine": out.logits_per_image / model.logit_scale.exp(),
         "vision.pooled": out.vision_model_output.pooler_output,
         "text.pooled": out.text_model_output.pooler_output,
         "text.last_hidden_state": out.text_model_output.last_hidden_state}
    for i, h in enumerate(out.vision_model_output.hidden_states):
        t[f"vision.hidden_states.{i}"] = h
    for i, h in enumerate(out.text_model_output.hidden_states):
        t[f"text.hidden_states.{i}"] = h
    save_model_dir(model, "clip_model_tiny")
    return save("clip_model_tiny", t)


FULL_PREFIX = "vision_model.encoder.layers.0."


def golden_clip_layer_full():
    """One CLIP ViT-L/14-336 encoder layer at full width. Weights: fill_value(FULL_PREFIX + key);
    input: hashfill("clip_layer_full.input", [1, 577, 1024], 1.0). Only every 4th output row (and
    the last row) is stored: 145 x 1024 f32 = 594 KB."""
    cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                           image_size=336, patch_size=14)
    layer = CLIPEncoderLayer(cfg).eval()
    fill_module(layer, FULL_PREFIX)
    x = hashfill("clip_layer_full.input", (1, 577, 1024), 1.0)
    with torch.no_grad():
        y = layer(x, None, None)[0]
    rows = list(range(0, 577, 4)) + [576]
    return save("clip_layer_full", {"rows": torch.tensor(rows, dtype=torch.int64), "output_rows": y[0, rows]})


def build_projector(kind: str, mm_hidden: int, hidden: int) -> nn.Module:
    """AlignGPT src/model/multimodal_components/mm_projector_builder.py, verbatim logic."""
    if kind == "linear":
        return nn.Linear(mm_hidden, hidden)
    m = re.match(r"^mlp(\d+)x_gelu$", kind)
    if m:
        modules = [nn.Linear(mm_hidden, hidden)]
        for _ in range(1, int(m.group(1))):
            modules.append(nn.GELU())
            modules.append(nn.Linear(hidden, hidden))
        return nn.Sequential(*modules)
    if kind == "identity":
        return nn.Identity()
    raise ValueError(f"Unknown projector type: {kind}")


def golden_clip_projector():
    """Projector outputs for each type, input [2, 5, 16] -> H = 24. Keys: "<type>.<HF key>" for
    weights (the HF key is mm_projector.<sequential index>.weight; a bare Linear has
    mm_projector.weight), "<type>.output"."""
    x = hashfill("clip_projector.input", (2, 5, 16), 3.0)
    t = {"input": x}
    for kind in ("linear", "mlp2x_gelu", "mlp3x_gelu", "identity"):
        proj = build_projector(kind, 16, 24)
        with torch.no_grad():
            for key, p in proj.named_parameters():
                full = "mm_projector." + key
                fan_in = 16 if key.split(".")[0] in ("weight", "bias", "0") else 24
                p.copy_(hashfill(full, tuple(p.shape), 1.0 / fan_in ** 0.5))
                t[kind + "." + full] = p.detach().clone()
            t[kind + ".output"] = proj(x).clone()
    return save("clip_projector", t)
