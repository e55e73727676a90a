"""Training-data goldens for include/aligngpt/train/data.h (tests/test_train_data.cpp).

    /usr/bin/python3 tests/tools/make_golden.py train_data

Written under tests/golden/train_data/:
  stage1.json, stage2.json   small datasets in the real LLaVA/AlignGPT format (a JSON array of
                             {"id", "image", "conversations", "similarity"}); images are the files of
                             tests/golden/images/ (the image folder).
  preprocessor_config.json   a tiny CLIPImageProcessor (shortest edge and crop 28, CLIP mean/std).
  train_data.safetensors     what the OFFICIAL src/utils/dataset.py gives for them:
      <set>.<i>.input_ids / .labels / .pixels   LazySupervisedDataset[i] (pixels: image records only)
      <set>.<i>.mismatch                        1 when preprocess_v1 printed "tokenization mismatch"
      <set>.<i>.length                          modality_lengths[i]
    for set = stage1 (plain, aspect square, model_max_length 2048), stage2 (vicuna_v1, pad, 2048)
    and stage2_short (vicuna_v1, pad, model_max_length 64: truncation);
      batch.<k>.records / .input_ids / .labels / .attention_mask   DataCollatorForSupervisedDataset
                                                                  over those records of stage2_short;
      sampler.<k>.lengths / .batch_world / .perm_image / .perm_text / .perm_batches / .out
        get_modality_length_grouped_indices (official aligngpt_trainer.py) and the torch.randperm
        permutations it drew, replayed from the same seeds (perm_image / perm_text from the global
        generator, perm_batches from the generator passed in; for one modality, perm_batches is the
        permutation of all samples). The C++ test feeds these permutations to the grouping logic.

The official repository (ALIGNGPT_REF_GIT, default the fetch mirror) is exported as a package
`src` and imported unpatched: src/utils/dataset.py, conversation.py, mm_utils.py, arguments.py,
constants.py and src/train/aligngpt_trainer.py, with the official src/__init__.py (which imports
the model classes; they load with transformers 4.31). The only settings made are the ones train.py
makes: conversation_lib.default_conversation, tokenizer.pad_token = unk, model_max_length,
data_args.is_multimodal / image_folder / image_processor / image_aspect_ratio.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import torch

from .common import GOLDEN_DIR
from .tokenizer import REF_GIT, TOK_DIR

OUT_DIR = os.path.join(GOLDEN_DIR, "train_data")
IMAGES = os.path.join(GOLDEN_DIR, "images")

PROCESSOR = {
    "crop_size": 28, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "size": 28,
}


def h(v):
    return {"from": "human", "value": v}


def g(v):
    return {"from": "gpt", "value": v}


STAGE1 = [
    {"id": "s1-0", "image": "landscape_500x333.png", "similarity": 3,
     "conversations": [h("<image>\nDescribe the image briefly."), g("A cat is sitting on a red sofa.")]},
    {"id": "s1-1", "image": "portrait_201x640.png", "similarity": 0,
     "conversations": [h("Render a clear caption <image>"), g("café naïve 日本語 🙂 near the window")]},
    {"id": "s1-2", "image": "photo_192x144.jpg", "similarity": 7, "extra": {"ignored": [1, 2]},
     "conversations": [h("<image>"), g("3 boats on the water.")]},
    {"id": 17, "image": "landscape_500x333.png", "similarity": 5,
     "conversations": [h("<image>\nWhat is this?"), g("  Two children   are flying a kite.\n")]},
]

LONG_Q = ("Please describe the image in detail, including the objects, people and their actions, "
          "and the colors of the car, the bottle and the table in the kitchen.")

STAGE2 = [
    # 0: one round
    {"id": "s2-0", "image": "landscape_500x333.png",
     "conversations": [h("<image>\nWhat is in the image?"), g("A cat is sitting on a red sofa.")]},
    # 1: three rounds
    {"id": "s2-1", "image": "portrait_201x640.png",
     "conversations": [h("What color is the car?\n<image>"), g("The car is blue."),
                       h("Where is the bottle?"), g("It is on the table."),
                       h("How many people are there?"), g("There are 3 people.")]},
    # 2: an answer starting with a digit: the lone "▁" is a target
    {"id": "s2-2", "image": "photo_192x144.jpg",
     "conversations": [h("<image>\nHow many boats?"), g("3 boats")]},
    # 3: <image> in the middle of the first human message
    {"id": "s2-3", "image": "landscape_500x333.png",
     "conversations": [h("What is <image> in this picture?"), g("A small dog playing in the park.")]},
    # 4: text only, two rounds
    {"id": "s2-4",
     "conversations": [h("What is the capital of France?"), g("Paris."), h("And of Japan?"), g("Tokyo.")]},
    # 5: a leading assistant turn: the reference skips it
    {"id": "s2-5", "image": "photo_192x144.jpg",
     "conversations": [g("Hello there."), h("<image>\nIs there a person in the image?"), g("Yes")]},
    # 6: long image record: cut by the collator at model_max_length 64
    {"id": "s2-6", "image": "landscape_500x333.png",
     "conversations": [h("<image>\n" + LONG_Q), g("The kitchen has a white refrigerator, a wooden table and four "
                                                  "chairs around it, and the sky is clear."),
                       h(LONG_Q), g("There is a man riding a bicycle down the street.")]},
    # 7: long text-only record: cut by the tokenizer at model_max_length 64
    {"id": "s2-7",
     "conversations": [h(LONG_Q), g("The quick brown fox jumps over the lazy dog while the sun sets behind the "
                                    "hills."), h(LONG_Q), g("Two children are flying a kite on the beach.")]},
    # 8: " ASSISTANT: " inside a question: the round splits in three, the whole sample is masked
    {"id": "s2-8", "image": "photo_192x144.jpg",
     "conversations": [h("<image>\nSay ASSISTANT: twice, ASSISTANT: ok?"), g("No.")]},
    # 9: non-ASCII text, a literal <unk> (id 0: dropped with its label by the attention mask),
    #    whitespace around the answer, a "similarity" in stage 2 and unknown fields
    {"id": "s2-9", "image": "portrait_201x640.png", "similarity": 2, "source": "x",
     "conversations": [h("<image>  Qu'est-ce que c'est? 日本語のテキスト <unk> here"),
                       g(" Un café naïve 🙂. "), h("Again?"), g("")]},
    # 10: text only, three rounds, the last answer empty
    {"id": "s2-10",
     "conversations": [h("Hi"), g("Hello! How can I help?"), h("Numbers like 12, 345"), g("2024 are digits."),
                       h("Bye"), g("")]},
]

BATCHES = [[0, 1, 4], [5, 6, 7], [8, 9, 10, 2]]

# Sampler cases: (name, lengths, batch_size, world_size, global seed, generator seed)
def _sampler_cases():
    mixed = [((i * 7) % 23 + 1) * (1 if i % 3 else -1) for i in range(50)]
    return [
        ("mixed_b4_w1", mixed, 4, 1, 1, 11),
        ("mixed_b2_w3", mixed, 2, 3, 2, 12),  # megabatch 6, split_to_even_chunks over 3 ranks
        ("image_only", [(i * 5) % 17 + 1 for i in range(30)], 4, 2, 3, 13),
        ("text_only", [-((i * 3) % 11 + 1) for i in range(21)], 5, 1, 4, 14),
        ("exact", [((i * 11) % 19 + 1) * (1 if i < 16 else -1) for i in range(24)], 2, 2, 5, 15),
    ]


def _ref_src():
    """The official repository's src/ as an importable package (unpatched)."""
    d = tempfile.mkdtemp()
    commit = subprocess.check_output(["git", "--git-dir", REF_GIT, "rev-parse", "HEAD"], text=True).strip()
    tar = subprocess.check_output(["git", "--git-dir", REF_GIT, "archive", "HEAD", "src"])
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(d)
    sys.path.insert(0, d)
    import importlib
    conv = importlib.import_module("src.utils.conversation")
    ds = importlib.import_module("src.utils.dataset")
    args = importlib.import_module("src.utils.arguments")
    trainer = importlib.import_module("src.train.aligngpt_trainer")
    return conv, ds, args, trainer, commit


def _dataset(conv, ds, args, name, records, template, aspect, mml, tokenizer_cls, processor):
    path = os.path.join(OUT_DIR, name)
    tok = tokenizer_cls.from_pretrained(TOK_DIR, model_max_length=mml, padding_side="right", use_fast=False)
    tok.pad_token = tok.unk_token
    conv.default_conversation = conv.conv_templates[template]
    da = args.DataArguments(data_path=path, lazy_preprocess=True, is_multimodal=True, image_folder=IMAGES,
                            image_aspect_ratio=aspect)
    da.image_processor = processor
    da.mm_use_im_start_end = False
    return ds.LazySupervisedDataset(path, tok, da), tok


def golden_train_data():
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, LlamaTokenizer

    conv, ds, args, trainer, commit = _ref_src()
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, recs in (("stage1.json", STAGE1), ("stage2.json", STAGE2)):
        with open(os.path.join(OUT_DIR, name), "w", encoding="utf-8") as f:
            json.dump(recs, f, ensure_ascii=False, indent=1)
            f.write("\n")
    with open(os.path.join(OUT_DIR, "preprocessor_config.json"), "w") as f:
        json.dump(PROCESSOR, f, indent=2)
        f.write("\n")
    processor = CLIPImageProcessor(**{k: v for k, v in PROCESSOR.items() if k != "feature_extractor_type"})

    out = {}
    sets = [("stage1", "stage1.json", STAGE1, "plain", "square", 2048),
            ("stage2", "stage2.json", STAGE2, "vicuna_v1", "pad", 2048),
            ("stage2_short", "stage2.json", STAGE2, "vicuna_v1", "pad", 64)]
    short = None
    for key, fname, recs, template, aspect, mml in sets:
        d, tok = _dataset(conv, ds, args, fname, recs, template, aspect, mml, LlamaTokenizer, processor)
        lengths = d.modality_lengths
        items = []
        for i in range(len(d)):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                item = d[i]
            mismatch = "tokenization mismatch" in buf.getvalue()
            out[f"{key}.{i}.input_ids"] = item["input_ids"].to(torch.int64)
            out[f"{key}.{i}.labels"] = item["labels"].to(torch.int64)
            out[f"{key}.{i}.mismatch"] = torch.tensor([int(mismatch)], dtype=torch.int64)
            out[f"{key}.{i}.length"] = torch.tensor([lengths[i]], dtype=torch.int64)
            if "image" in recs[i]:
                out[f"{key}.{i}.pixels"] = item["image"].to(torch.float32)
            items.append(item)
        if key == "stage2_short":
            short = (items, tok)
    items, tok = short
    collator = ds.DataCollatorForSupervisedDataset(tokenizer=tok)
    for k, recs in enumerate(BATCHES):
        b = collator([items[i] for i in recs])
        out[f"batch.{k}.records"] = torch.tensor(recs, dtype=torch.int64)
        out[f"batch.{k}.input_ids"] = b["input_ids"].to(torch.int64)
        out[f"batch.{k}.labels"] = b["labels"].to(torch.int64)
        out[f"batch.{k}.attention_mask"] = b["attention_mask"].to(torch.int64)

    for k, (name, lengths, bs, ws, seed, gseed) in enumerate(_sampler_cases()):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(gseed)
        got = trainer.get_modality_length_grouped_indices(lengths, bs, ws, generator=gen)
        # Replay the draws: the same calls in the same order from the same seeds.
        n_img = sum(1 for x in lengths if x > 0)
        n_txt = len(lengths) - n_img
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(gseed)
        if n_img and n_txt:
            perm_image = torch.randperm(n_img)
            perm_text = torch.randperm(n_txt)
            mb = bs * ws
            n_batches = (n_img + mb - 1) // mb - 1 + (n_txt + mb - 1) // mb - 1
            perm_batches = torch.randperm(n_batches, generator=gen)
        else:
            perm_image = torch.zeros(0, dtype=torch.int64)
            perm_text = torch.zeros(0, dtype=torch.int64)
            perm_batches = torch.randperm(len(lengths), generator=gen)
        p = f"sampler.{k}"
        out[p + ".lengths"] = torch.tensor(lengths, dtype=torch.int64)
        out[p + ".batch_world"] = torch.tensor([bs, ws], dtype=torch.int64)
        out[p + ".perm_image"] = perm_image.to(torch.int64)
        out[p + ".perm_text"] = perm_text.to(torch.int64)
        out[p + ".perm_batches"] = perm_batches.to(torch.int64)
        out[p + ".out"] = torch.tensor(got, dtype=torch.int64)

    path = os.path.join(OUT_DIR, "train_data.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path,
              metadata={"generator": "tests/tools/golden/train_data.py golden_train_data", "reference_commit": commit,
                        "sampler_cases": json.dumps([c[0] for c in _sampler_cases()])})
    return path
