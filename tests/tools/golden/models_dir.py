"""Tiny model directories in the published layout (docs/model.md §11) for include/aligngpt/pretrained.h
and tools/aligngpt.cpp (tests/test_loader.cpp, tests/test_trace.cpp).

Written under tests/golden/model_dirs/ with the REAL transformers 4.31 / torch classes:
  clip_vision/          CLIPVisionModel.save_pretrained(safe_serialization=False): config.json,
                        pytorch_model.bin (fp32, like openai/clip-vit-large-patch14-336), and
                        preprocessor_config.json (CLIPImageProcessor, 48 px). hidden 32, 2 layers,
                        image 48 / patch 2 = 24 x 24 = 576 patches (the gate's fixed width).
  aligngpt_bin/         AlignGPTForCausalLM (a LlamaForCausalLM subclass holding mm_projector,
                        align_indicators, gated_weight_layer and a vision_tower.vision_tower.* CLIP
                        copy, as the reference's module tree) in bf16, save_pretrained(
                        safe_serialization=False, max_shard_size=...) -> pytorch_model-0000x-of-0000y.bin
                        + pytorch_model.bin.index.json. config.json has model_type "aligngpt" and
                        the mm_* fields; mm_vision_tower is the hub id (tests pass --vision-tower).
  aligngpt_st/          the same model, save_pretrained(safe_serialization=True) (sharded safetensors).
  aligngpt_pretrain/    a stage-1 output: config.json + mm_projector_align.bin = torch.save of the
                        filtered bf16 state dict (mm_projector.*, align_indicators.indicator_embs),
                        with values different from the finetuned ones (so an overlay is visible).
  image.png             a 40 x 30 RGB image (landscape: exercises expand2square)
  pixels.safetensors    {"pixel_values": [1,3,48,48]} of image.png (pad + CLIPImageProcessor)
  trace_ref.safetensors the reference trace for (pixels, ids): vision.hidden_states.<i>,
                        vision.features, projector.out, gate.*, align.indicator, inputs_embeds,
                        llm.layers.<i>.out, logits, input_ids; [1, S, *] tensors at the rows "probe".

The LLM, projector, gate and indicators are models_aligngpt.build() (hashfill by HF key) rounded to
bf16; the reference forward is models_aligngpt.reference_forward, run in fp32 on the bf16 values
(the checkpoint's exact numbers), with the fp32 CLIP of clip_vision/ (not the bf16 copy, whose
values are deliberately different: the reference ignores it, docs/model.md §11.3).
"""
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from .common import GOLDEN_DIR, hashfill, save
from .models_aligngpt import IGNORE, IMAGE, build, ids_from, reference_forward
from .models_clip import fill_module as clip_fill

ROOT = os.path.join(GOLDEN_DIR, "model_dirs")
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SHARD = "400KB"


class AlignGPTConfig(LlamaConfig):
    model_type = "aligngpt"


class AlignIndicator(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.indicator_embs = nn.Parameter(torch.zeros(8, h))


class GatedWeightLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(576, 256), nn.GELU(), nn.Linear(256, 7))


class VisionTower(nn.Module):  # CLIPVisionTower: the HF model sits at .vision_tower
    def __init__(self, clip):
        super().__init__()
        self.vision_tower = clip


class AlignGPTForCausalLM(LlamaForCausalLM):
    config_class = AlignGPTConfig

    def __init__(self, config):
        super().__init__(config)
        self.mm_projector = nn.Sequential(nn.Linear(config.mm_hidden_size, config.hidden_size), nn.GELU(),
                                          nn.Linear(config.hidden_size, config.hidden_size))
        self.align_indicators = AlignIndicator(config.hidden_size)
        self.gated_weight_layer = GatedWeightLayer()
        self.vision_tower = VisionTower(CLIPVisionModel(clip_config()))


def clip_config():
    return CLIPVisionConfig(hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                            image_size=48, patch_size=2, projection_dim=16)


def aligngpt_config(aspect="pad"):
    llm, _, _, _ = build()
    d = llm.config.to_dict()
    for k in ("model_type", "architectures", "transformers_version", "_name_or_path", "torch_dtype"):
        d.pop(k, None)
    c = AlignGPTConfig(**d)
    c.architectures = ["AlignGPTForCausalLM"]
    c.mm_hidden_size = 32
    c.mm_projector_type = "mlp2x_gelu"
    c.mm_vision_tower = "openai/clip-vit-large-patch14-336"
    c.mm_vision_select_layer = -2
    c.mm_vision_select_feature = "patch"
    c.mm_use_im_start_end = False
    c.mm_use_im_patch_token = False
    c.image_aspect_ratio = aspect
    c.tokenizer_model_max_length = 2048
    c.tokenizer_padding_side = "right"
    c.tune_mm_mlp_adapter = aspect == "square"
    c.freeze_mm_mlp_adapter = False
    c.use_mm_proj = True
    return c


def bf16_round(*mods):
    with torch.no_grad():
        for m in mods:
            for p in (m.parameters() if isinstance(m, nn.Module) else [m]):
                p.copy_(p.bfloat16().float())


def clean(d):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)


def make_image():
    """40 x 30 RGB: smooth gradients plus a hashfilled texture (deterministic)."""
    y, x = np.mgrid[0:30, 0:40]
    noise = ((hashfill("model_dirs.image", (30, 40, 3), 1.0).numpy() + 1) * 40).astype(np.int64)
    img = np.stack([x * 6, y * 8, (x + y) * 3], -1) + noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def expand2square(img, fill):
    w, h = img.size
    if w == h:
        return img
    s = max(w, h)
    out = Image.new(img.mode, (s, s), fill)
    out.paste(img, (0, (s - h) // 2) if w > h else ((s - w) // 2, 0))
    return out


def golden_model_dirs():
    clean(ROOT)
    torch.manual_seed(0)

    # --- vision tower directory (fp32) + image processor
    clip = CLIPVisionModel(clip_config()).eval()
    clip_fill(clip)
    vdir = os.path.join(ROOT, "clip_vision")
    clip.save_pretrained(vdir, safe_serialization=False)
    proc = CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}, image_mean=MEAN,
                              image_std=STD, resample=3, do_center_crop=True, do_normalize=True, do_resize=True)
    proc.save_pretrained(vdir)

    # --- AlignGPT (finetuned layout), bf16
    llm, proj, gate, ind = build()
    bf16_round(llm, proj, gate, ind)
    cfg = aligngpt_config("pad")
    model = AlignGPTForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.load_state_dict(llm.model.state_dict())
        model.lm_head.load_state_dict(llm.lm_head.state_dict())
        model.mm_projector.load_state_dict(proj.state_dict())
        model.gated_weight_layer.mlp.load_state_dict(gate.state_dict())
        model.align_indicators.indicator_embs.copy_(ind)
        # the CLIP copy: different numbers (the reference never reads them)
        for k, p in model.vision_tower.vision_tower.named_parameters():
            p.copy_(hashfill("copy." + k, tuple(p.shape), 0.3))
    model = model.to(torch.bfloat16)
    for name, safe in (("aligngpt_bin", False), ("aligngpt_st", True)):
        d = os.path.join(ROOT, name)
        model.save_pretrained(d, safe_serialization=safe, max_shard_size=SHARD)
        os.remove(os.path.join(d, "generation_config.json"))

    # --- stage-1 output: config + mm_projector_align.bin (projector + indicators only, bf16)
    pdir = os.path.join(ROOT, "aligngpt_pretrain")
    os.makedirs(pdir)
    pcfg = aligngpt_config("square")
    pcfg.architectures = ["LlamaForCausalLM"]
    pcfg.save_pretrained(pdir)
    s1 = {}
    for k, v in proj.state_dict().items():
        s1["mm_projector." + k] = hashfill("stage1.mm_projector." + k, tuple(v.shape), 0.1).bfloat16()
    s1["align_indicators.indicator_embs"] = hashfill("stage1.indicators", tuple(ind.shape), 0.2).bfloat16()
    torch.save(s1, os.path.join(pdir, "mm_projector_align.bin"))

    # --- inputs: image -> pixels (pad, then CLIPImageProcessor), prompt ids
    img = make_image()
    img.save(os.path.join(ROOT, "image.png"))
    sq = expand2square(img, tuple(int(255 * m) for m in MEAN))
    pixels = proc.preprocess(sq, return_tensors="pt")["pixel_values"].float()
    save("model_dirs/pixels", {"pixel_values": pixels})
    ids = [1] + ids_from("model_dirs.sys", 4) + [29, IMAGE, 29, 13] + ids_from("model_dirs.q", 5) + [40, 41]

    # --- reference trace (fp32 on the checkpoint's values; CLIP from clip_vision/, fp32)
    with torch.no_grad():
        vo = clip(pixel_values=pixels, output_hidden_states=True)
        hs = vo.hidden_states
        feats = hs[-2][:, 1:]
        trace, _ = reference_forward(llm, proj, gate, ind, [{"ids": ids, "labels": [IGNORE] * len(ids)}], feats,
                                     "inference", 2048)
        pout = proj(feats)
    S = trace["logits"].shape[1]
    probe = sorted(set(range(24)) | set(range(S - 24, S)) | set(range(0, S, 29)))
    vprobe = sorted(set(range(8)) | set(range(0, hs[0].shape[1], 31)) | {hs[0].shape[1] - 1})
    t = {"probe": torch.tensor(probe, dtype=torch.int64), "vprobe": torch.tensor(vprobe, dtype=torch.int64),
         "input_ids": torch.tensor(ids, dtype=torch.int64), "pixel_values": pixels}
    for i, h in enumerate(hs):
        t[f"vision.hidden_states.{i}"] = h[:, vprobe]
    t["vision.features"] = feats[:, [v - 1 for v in vprobe if v > 0]]
    t["projector.out"] = pout[:, [v - 1 for v in vprobe if v > 0]]
    for k, v in trace.items():
        v = v.detach()
        t[k] = v[:, probe] if v.dim() == 3 and v.shape[1] == S else v
    save("model_dirs/trace_ref", t, metadata={"S": str(S), "vision_select_layer": "-2"})
    with open(os.path.join(ROOT, "README"), "w") as f:
        f.write("Generated by tests/tools/make_golden.py model_dirs (tests/tools/golden/models_dir.py).\n")
    return ROOT
