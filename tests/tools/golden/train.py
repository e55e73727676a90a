"""Training parity goldens for include/aligngpt/train/trainer.h (tests/test_train.cpp).

Both stages are run by the OFFICIAL AlignGPT code, unpatched (read from the `fetch` mirror of
github:AlignGPT-VL/AlignGPT, see tokenizer.py): AlignGPTForCausalLM with its set_stage /
initialize_vision_modules / initialize_align_components / load_pretrained_weights, the CLIPVisionTower,
LazySupervisedDataset (preprocess_plain, preprocess_v1, images) and DataCollatorForSupervisedDataset,
set up in train.py's order, in float32 on CPU with transformers 4.31. What is NOT the reference's:
  - the loop. HF Trainer + DeepSpeed do not run here; the loop below is the Trainer's for one process
    (AdamW with HF's defaults, get_scheduler, loss / K per micro-batch, clip_grad_norm_ when
    max_grad_norm > 0, optimizer.step, scheduler.step, zero_grad), with a SEQUENTIAL sampler: the
    C++ run uses --no-shuffle (torch's RandomSampler cannot be reproduced outside torch).
  - the random initial values. After initialize_align_components the new projector, indicators and
    gate are overwritten with the project's seeded init (rng.h: hashfill by HF key, PyTorch's bounds:
    1/sqrt(fan_in) for Linear weight and bias, xavier sqrt(6/(H+8)) for the indicators), so that both
    sides start from the same numbers.
  - the stage-1 file is written as safe_save_model_for_hf_trainer writes it (torch.save of the
    parameters whose name contains "mm_projector" or "indicator_embs") without its DeepSpeed gather.

Written under tests/golden/train/:
  vicuna/          a tiny LlamaForCausalLM (vocab = the tiny tokenizer's 600) in HF layout + tokenizer files
  stage1.json, stage2.json   LLaVA-format data (images from tests/golden/images/)
  stage1_ref/mm_projector_align.bin   the reference's stage-1 output (stage 2 starts from it)
  stage1.safetensors, stage2.safetensors   per step (1-based): loss (mean of the micro-batch losses, as
                   HF logs it), lr (the rate used by that step's update), grad_norm (before clipping);
                   grad.<name> of step 1 (after accumulation, before clipping), param.<name> after the
                   last step, for every trainable parameter.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

from .common import GOLDEN_DIR, hashfill, save
from .models_llama import fill_module, tiny_config

OUT = os.path.join(GOLDEN_DIR, "train")
REF_GIT = os.environ.get("ALIGNGPT_REF_GIT", "/work/.mirror/AlignGPT-VL+AlignGPT/repo")
CLIP_DIR = os.path.join(GOLDEN_DIR, "model_dirs", "clip_vision")   # 48 px / patch 2 = 576 tokens
IMAGES = os.path.join(GOLDEN_DIR, "images")
TOK_DIR = os.path.join(GOLDEN_DIR, "tokenizer")
SEED = 42  # --seed: the C++ trainer's default, like HF's

# Settings shared by the golden run and tests/test_train.cpp (which passes the same flags).
RUNS = {
    "stage1": dict(stage="pretrain", version="plain", aspect="square", lr=1e-3, batch=2, accum=2, epochs=2,
                   warmup_ratio=0.3, scheduler="cosine", max_grad_norm=0.0, model_max_length=590),
    "stage2": dict(stage="finetune", version="v1", aspect="pad", lr=1e-3, batch=2, accum=2, epochs=2,
                   warmup_ratio=0.3, scheduler="cosine", max_grad_norm=1.0, model_max_length=2048),
}

CAPTIONS = [
    "A cat is sitting on a red sofa next to a window.",
    "The quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "Two children are flying a kite on the beach; the sky is clear and the water is calm.",
    "There is a man riding a bicycle down the street, and a woman walking with an umbrella.",
    "The kitchen has a white refrigerator, a wooden table and four chairs around it.",
    "A small dog playing in the park.",
    "What color is the car? The car is blue.",
    "The picture shows 3 people standing near the bus stop.",
]
IMAGE_FILES = ["photo_192x144.pil_decoded.png", "landscape_500x333.png", "portrait_201x640.png", "gray_160x100.png",
               "palette_64x48.png", "photo_192x144.pil_decoded.png", "landscape_500x333.png", "gray_160x100.png"]


def stage1_records():
    # plain: the human text is dropped; captions 2-4 are long enough to be cut by model_max_length 590
    # (1 BOS + 576 image rows leave 12 caption tokens): truncation that cuts targets.
    return [{"id": f"s1-{i}", "image": IMAGE_FILES[i],
             "conversations": [{"from": "human", "value": "Describe the picture.\n<image>"},
                               {"from": "gpt", "value": CAPTIONS[i]}],
             "similarity": (i * 3) % 8} for i in range(8)]


def stage2_records():
    return [
        {"id": "s2-0", "image": "photo_192x144.pil_decoded.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the image?"},
            {"from": "gpt", "value": "A cat is sitting on a red sofa."}]},
        {"id": "s2-1", "image": "landscape_500x333.png", "conversations": [
            {"from": "human", "value": "How many people are there?\n<image>"},
            {"from": "gpt", "value": "3 people."},
            {"from": "human", "value": "Where are they?"},
            {"from": "gpt", "value": "Near the bus stop."},
            {"from": "human", "value": "Is there a dog?"},
            {"from": "gpt", "value": "No"}]},
        {"id": "s2-2", "conversations": [  # text-only, in a batch with an image record
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": "Paris is the capital of France."}]},
        {"id": "s2-3", "image": "portrait_201x640.png", "conversations": [
            {"from": "human", "value": "Describe the <image> picture in detail."},
            {"from": "gpt", "value": "The picture shows a small dog playing in the park."}]},
        {"id": "s2-4", "image": "gray_160x100.png", "conversations": [
            {"from": "human", "value": "<image>\nIs there a person in the image? Answer the question using a single word or phrase."},
            {"from": "gpt", "value": "Yes"}]},
        {"id": "s2-5", "image": "palette_64x48.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the car?"},
            {"from": "gpt", "value": "The car is blue."},
            {"from": "human", "value": "Where is the bottle?"},
            {"from": "gpt", "value": "It is on the table."}]},
        {"id": "s2-6", "conversations": [
            {"from": "human", "value": "Numbers like 12 and 345?"},
            {"from": "gpt", "value": "2024 is split into single digits."}]},
        {"id": "s2-7", "image": "photo_192x144.pil_decoded.png", "conversations": [
            {"from": "human", "value": "<image>\nPlease describe the image."},
            {"from": "gpt", "value": "Two children are flying a kite on the beach."}]},
    ]


def ref_package():
    """The official src/ tree as an importable package, unpatched (git archive of the mirror's HEAD)."""
    d = tempfile.mkdtemp()
    archive = subprocess.check_output(["git", "--git-dir", REF_GIT, "archive", "HEAD", "src"])
    subprocess.run(["tar", "x", "-C", d], input=archive, check=True)
    sys.path.insert(0, d)
    commit = subprocess.check_output(["git", "--git-dir", REF_GIT, "rev-parse", "HEAD"], text=True).strip()
    return commit


def write_vicuna():
    d = os.path.join(OUT, "vicuna")
    shutil.rmtree(d, ignore_errors=True)
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM
    llm = LlamaForCausalLM(tiny_config(vocab_size=600, max_position_embeddings=2048))
    fill_module(llm)
    llm.save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOK_DIR, f), os.path.join(d, f))
    return d


def seeded_init(model, stage):
    """The C++ trainer's init of the new components (models/projector.h, models/align.h, rng.h)."""
    H = model.config.hidden_size
    with torch.no_grad():
        mods = [("mm_projector.", model.mm_projector)]
        if stage == "finetune":
            mods.append(("gated_weight_layer.mlp.", model.gated_weight_layer.mlp))
        for prefix, seq in mods:
            for k, p in seq.named_parameters():
                fan_in = seq[int(k.split(".")[0])].in_features
                a = float(np.float32(1.0) / np.sqrt(np.float32(fan_in)))  # 1.0f / sqrt(float(in)), as C++
                p.copy_(hashfill(prefix + k, tuple(p.shape), a, SEED))
        model.align_indicators.indicator_embs.copy_(
            hashfill("align_indicators.indicator_embs", (8, H), float(np.float32(math.sqrt(6.0 / (H + 8)))), SEED))


def run(name, vicuna, data_path, stage1_file=None):
    import transformers
    from transformers import get_scheduler
    from src.model.aligngpt import AlignGPTForCausalLM
    import src.utils.conversation as conversation_lib
    from src.utils.arguments import DataArguments, ModelArguments
    from src.utils.dataset import make_supervised_data_module

    cfg = RUNS[name]
    torch.manual_seed(0)
    model = AlignGPTForCausalLM.from_pretrained(vicuna, torch_dtype=torch.float32)
    model.config.use_cache = False
    tokenizer = transformers.AutoTokenizer.from_pretrained(vicuna, model_max_length=cfg["model_max_length"],
                                                           padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    conversation_lib.default_conversation = conversation_lib.conv_templates[cfg["version"]]
    model.set_stage(cfg["stage"])
    margs = ModelArguments(model_name_or_path=vicuna, version=cfg["version"], vision_tower=CLIP_DIR,
                           mm_vision_select_layer=-2, mm_projector_type="mlp2x_gelu", mm_use_im_start_end=False,
                           mm_use_im_patch_token=False, tune_mm_mlp_adapter=cfg["stage"] == "pretrain",
                           pretrain_mm_mlp_align=stage1_file)
    dargs = DataArguments(data_path=data_path, lazy_preprocess=True, image_folder=IMAGES,
                          image_aspect_ratio=cfg["aspect"])
    model.initialize_vision_modules(model_args=margs)
    model.initialize_align_components()
    seeded_init(model, cfg["stage"])
    model.load_pretrained_weights(model_args=margs)
    vision_tower = model.get_vision_tower()
    vision_tower.to(dtype=torch.float32)
    dargs.image_processor = vision_tower.image_processor
    dargs.is_multimodal = True
    model.config.image_aspect_ratio = dargs.image_aspect_ratio
    model.config.tokenizer_padding_side = tokenizer.padding_side
    model.config.tokenizer_model_max_length = tokenizer.model_max_length
    model.config.tune_mm_mlp_adapter = margs.tune_mm_mlp_adapter
    if margs.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        for p in model.mm_projector.parameters():
            p.requires_grad = True
        model.align_indicators.indicator_embs.requires_grad = True
    if cfg["stage"] == "finetune":
        model.align_indicators.indicator_embs.requires_grad = False
    model.config.mm_use_im_start_end = dargs.mm_use_im_start_end = False
    model.initialize_vision_tokenizer(margs, tokenizer=tokenizer)
    data = make_supervised_data_module(tokenizer=tokenizer, data_args=dargs)
    ds, collate = data["train_dataset"], data["data_collator"]

    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    assert not any(k.startswith("vision_tower") for k, _ in trainable)
    B, K, E = cfg["batch"], cfg["accum"], cfg["epochs"]
    batches = [list(range(i, min(i + B, len(ds)))) for i in range(0, len(ds), B)]
    per_epoch = max(len(batches) // K, 1)
    total = math.ceil(E * per_epoch)
    warmup = math.ceil(cfg["warmup_ratio"] * total)
    # HF's two groups (decay / no decay) have weight decay 0 here, as in the official scripts
    opt = torch.optim.AdamW([p for _, p in trainable], lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    sched = get_scheduler(cfg["scheduler"], opt, num_warmup_steps=warmup, num_training_steps=total)
    model.train()
    out = {}
    losses, lrs, norms = [], [], []
    micro = [b for _ in range(E) for b in batches]
    for step in range(total):
        step_loss = 0.0
        for j in range(K):
            batch = collate([ds[i] for i in micro[step * K + j]])
            loss = model(**batch).loss
            (loss / K).backward()
            step_loss += loss.item() / K
        grads = [p.grad for _, p in trainable if p.grad is not None]
        norm = torch.norm(torch.stack([torch.norm(g.detach(), 2.0) for g in grads]), 2.0).item()
        if step == 0:
            for k, p in trainable:
                out["grad." + k] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
        if cfg["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in trainable], cfg["max_grad_norm"])
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        norms.append(norm)
        print(f"[train golden] {name} step {step + 1}/{total}: loss {step_loss:.6f} lr {lrs[-1]:.3e} "
              f"grad_norm {norm:.4f}")
    for k, p in trainable:
        out["param." + k] = p.detach().clone()
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    out["lr"] = torch.tensor(lrs, dtype=torch.float64)
    out["grad_norm"] = torch.tensor(norms, dtype=torch.float64)
    meta = {k: str(v) for k, v in cfg.items()}
    meta.update(total_steps=str(total), warmup_steps=str(warmup), seed=str(SEED))
    save(os.path.join("train", name), out, meta)
    return model


def golden_train():
    commit = ref_package()
    os.makedirs(OUT, exist_ok=True)
    vicuna = write_vicuna()
    for name, records in (("stage1", stage1_records()), ("stage2", stage2_records())):
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(records, f, indent=1, ensure_ascii=False)
            f.write("\n")
    model = run("stage1", vicuna, os.path.join(OUT, "stage1.json"))
    # safe_save_model_for_hf_trainer with tune_mm_mlp_adapter: the projector and indicator parameters
    ref1 = os.path.join(OUT, "stage1_ref")
    os.makedirs(ref1, exist_ok=True)
    keep = {k: v.detach().cpu().clone() for k, v in model.named_parameters()
            if any(m in k for m in ("mm_projector", "indicator_embs"))}
    torch.save(keep, os.path.join(ref1, "mm_projector_align.bin"))
    run("stage2", vicuna, os.path.join(OUT, "stage2.json"), os.path.join(ref1, "mm_projector_align.bin"))
    return f"tests/golden/train/ (official AlignGPT {commit[:12]})"


def golden_train_export():
    """The reference loads what the C++ trainer exports (tests/test_train.cpp writes them with
    ALIGNGPT_WRITE_TRAIN_EXPORT_GOLDEN=1 into tests/golden/train/export_stage1 and export_stage2):
      - export_stage1/mm_projector_align.bin through load_pretrained_weights, as stage 2 starts;
        the loaded projector and level embeddings are saved (the C++ test wants the same bits);
      - export_stage2/ through AlignGPTForCausalLM.from_pretrained (the builder's call, in float32),
        in stage 'inference' on one image and prompt: its logits.
    """
    import transformers
    from PIL import Image
    ref_package()
    from src.model.aligngpt import AlignGPTForCausalLM
    from src.utils.arguments import ModelArguments
    from src.utils.mm_utils import tokenizer_image_token, expand2square
    import src.utils.conversation as conversation_lib

    vicuna = os.path.join(OUT, "vicuna")
    out = {}
    # stage-1 file -> the reference's stage-2 start
    model = AlignGPTForCausalLM.from_pretrained(vicuna, torch_dtype=torch.float32)
    model.set_stage("finetune")
    margs = ModelArguments(model_name_or_path=vicuna, version="v1", vision_tower=CLIP_DIR, mm_vision_select_layer=-2,
                           mm_projector_type="mlp2x_gelu", mm_use_im_start_end=False, mm_use_im_patch_token=False,
                           pretrain_mm_mlp_align=os.path.join(OUT, "export_stage1", "mm_projector_align.bin"))
    model.initialize_vision_modules(model_args=margs)
    model.initialize_align_components()
    model.load_pretrained_weights(model_args=margs)
    for k, v in model.named_parameters():
        if "mm_projector" in k or "indicator_embs" in k:
            out["stage1_loaded." + k] = v.detach().clone()

    # the HF directory -> inference logits
    d = os.path.join(OUT, "export_stage2")
    cfg = transformers.AutoConfig.from_pretrained(d)
    cfg.mm_vision_tower = CLIP_DIR  # the export names the tower by the path it was trained with
    model = AlignGPTForCausalLM.from_pretrained(d, config=cfg, torch_dtype=torch.float32).eval()
    tower = model.get_vision_tower()
    if not tower.is_loaded:
        tower.load_model()
    tower.to(dtype=torch.float32)
    model.set_stage("inference")
    tok = transformers.AutoTokenizer.from_pretrained(d, use_fast=False)
    conv = conversation_lib.conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is in the image?")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tok, return_tensors="pt").unsqueeze(0)
    proc = tower.image_processor
    img = expand2square(Image.open(os.path.join(IMAGES, "landscape_500x333.png")).convert("RGB"),
                        tuple(int(x * 255) for x in proc.image_mean))
    pixels = proc.preprocess(img, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), images=pixels).logits
    out["input_ids"] = ids[0]
    out["pixel_values"] = pixels
    out["logits"] = logits[0]
    save(os.path.join("train", "export_ref"), out)
    return "tests/golden/train/export_ref.safetensors"
