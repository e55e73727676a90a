"""Golden recipe for the LLaVA-1.5 baseline (models/aligngpt.h with alignment_module false; tests/test_llava.cpp).

The reference is the OFFICIAL LLaVA code at tag v1.1.3 (the release that trained LLaVA-1.5, written for
transformers 4.31), read unpatched from a git archive of the `fetch` mirror of haotian-liu/LLaVA:
LlavaLlamaForCausalLM with its CLIPVisionTower (select layer -2, patch features) and mlp2x_gelu projector,
run in float32 on the CPU. One stand-in: the `einops` module, imported by llava/__init__.py only for the MPT
model, is not installed and is replaced by an empty module before the import (LLaMA never uses it).

The model: the tiny CLIP vision tower of tests/golden/model_dirs/clip_vision (48 px, 2-px patches: 576
image tokens of width 32) and a tiny LLaMA (models_llama.tiny_config, vocab 64), every LLM weight
models_llama.fill_value(<HF key>), the projector hashfill(<key>, 1/sqrt(fan_in)). Saved as a LLaVA model
directory (config.json with model_type "llava", model.safetensors without the vision tower, whose
mm_vision_tower points at the tiny CLIP by a relative path) that pretrained::load_aligngpt reads.

Outputs (tests/golden/llava/): model/ and io.safetensors: the batch (two image samples of different
lengths, right-padded as the collator pads), the pixels, LlavaLlamaForCausalLM's loss, its logits at the
real (unpadded) positions, and the gradients of loss.backward() for the projector and two LLM weights.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types

import torch

from .common import GOLDEN_DIR, hashfill, save
from .models_llama import fill_module, tiny_config

LLAVA_GIT = os.environ.get("ALIGNGPT_LLAVA_GIT", "/work/.mirror/haotian-liu+LLaVA/repo")
LLAVA_TAG = "v1.1.3"
IGNORE, IMAGE = -100, -200
V = 64
GRADS = ("model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.layers.0.self_attn.q_proj.weight",
         "model.embed_tokens.weight")


def llava_package():
    d = tempfile.mkdtemp()
    archive = subprocess.check_output(["git", "--git-dir", LLAVA_GIT, "archive", LLAVA_TAG, "llava"])
    subprocess.run(["tar", "x", "-C", d], input=archive, check=True)
    sys.path.insert(0, d)
    einops = types.ModuleType("einops")  # only llava_mpt imports it, and only rearrange
    einops.rearrange = None
    sys.modules.setdefault("einops", einops)
    return subprocess.check_output(["git", "--git-dir", LLAVA_GIT, "rev-parse", LLAVA_TAG + "^{commit}"], text=True).strip()


def golden_llava():
    commit = llava_package()
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    clip_dir = os.path.join(GOLDEN_DIR, "model_dirs", "clip_vision")
    cfg = LlavaConfig(**tiny_config(vocab_size=V, max_position_embeddings=2048).to_dict())
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM(cfg)
    args = types.SimpleNamespace(vision_tower=clip_dir, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                                 pretrain_mm_mlp_adapter=None, mm_projector_type="mlp2x_gelu")
    model.get_model().initialize_vision_modules(args)
    fill_module(model.model.layers, "model.layers.")
    fill_module(model.model.norm, "model.norm.")
    fill_module(model.model.embed_tokens, "model.embed_tokens.")
    fill_module(model.lm_head, "lm_head.")
    with torch.no_grad():
        proj = model.get_model().mm_projector
        for k, p in proj.named_parameters():
            fan_in = proj[int(k.split(".")[0])].in_features
            p.copy_(hashfill("mm_projector." + k, tuple(p.shape), 1.0 / fan_in ** 0.5))
    model.config.tokenizer_model_max_length = 2048
    model.config.tokenizer_padding_side = "right"
    model.config.image_aspect_ratio = "pad"
    model.float().train(False)

    # The batch: ids with one -200 each, right-padded with pad id 0 and labels IGNORE as the collator does.
    samples = [
        ([1, 5, 9, 13, IMAGE, 17, 21, 2, 33, 40, 2], [IGNORE, IGNORE, IGNORE, IGNORE, IMAGE, IGNORE, IGNORE, IGNORE, 33, 40, 2]),
        ([1, IMAGE, 7, 8, 60, 2], [IGNORE, IMAGE, IGNORE, IGNORE, 60, 2]),
    ]
    L = max(len(i) for i, _ in samples)
    ids = torch.zeros(len(samples), L, dtype=torch.long)
    labels = torch.full((len(samples), L), IGNORE, dtype=torch.long)
    mask = torch.zeros(len(samples), L, dtype=torch.bool)
    for b, (i, lab) in enumerate(samples):
        ids[b, :len(i)] = torch.tensor(i)
        labels[b, :len(lab)] = torch.tensor([IGNORE if x == IMAGE else x for x in lab])
        mask[b, :len(i)] = True
    pixels = hashfill("llava.pixels", (len(samples), 3, 48, 48), 2.0)

    out = model(input_ids=ids, attention_mask=mask, labels=labels, images=pixels)
    out.loss.backward()
    # logits of the real positions: image sample b is ids[:at] + P image rows + ids[at+1:len]
    P = 576
    real = []
    for b, (i, _) in enumerate(samples):
        n = len(i) - 1 + P
        real.append(out.logits[b, :n].detach())
    named = dict(model.named_parameters())
    t = {"ids0": torch.tensor(samples[0][0]), "labels0": torch.tensor([IGNORE if x == IMAGE else x for x in samples[0][1]]),
         "ids1": torch.tensor(samples[1][0]), "labels1": torch.tensor([IGNORE if x == IMAGE else x for x in samples[1][1]]),
         "pixels": pixels, "loss": out.loss.detach().reshape(1), "logits0": real[0], "logits1": real[1]}
    for k in GRADS:
        t["grad." + k] = named[k].grad.detach().clone()

    d = os.path.join(GOLDEN_DIR, "llava")
    shutil.rmtree(d, ignore_errors=True)
    mdir = os.path.join(d, "model")
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if "vision_tower" not in k}
    os.makedirs(mdir)
    from safetensors.torch import save_file
    save_file(sd, os.path.join(mdir, "model.safetensors"), metadata={"format": "pt"})
    c = model.config.to_diff_dict()  # what save_pretrained writes
    c["mm_vision_tower"] = "../../model_dirs/clip_vision"  # relative to this directory
    c["architectures"] = ["LlavaLlamaForCausalLM"]
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    save("llava/io", t, {"llava_commit": commit, "llava_tag": LLAVA_TAG})
    return d
