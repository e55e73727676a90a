"""End to end for `aligngpt run` (tests/test_run.cpp): the tiny AlignGPT of model_dirs/ (its weights
as models_dir.py writes them, bf16 values run in fp32), its CLIP tower and image.png, with a tokenizer
that fits the tiny model's 64-token vocabulary.

Written under tests/golden/run_tiny/:
  tokenizer.model, tokenizer_config.json   a 64-piece SentencePiece BPE model (no byte fallback:
                                           256 byte pieces do not fit; unknown characters are <unk>),
                                           legacy false as published
  expected.json                            for each case: the prompt of the official conversation.py
                                           (vicuna_v1, "<image>\\n" + question), its ids from the
                                           official tokenizer_image_token with the real LlamaTokenizer,
                                           the reference's greedy tokens (HF generate with
                                           do_sample=False: argmax with the KV cache, stop at EOS) and
                                           the answer as model_vqa_loader.py makes it: decode with
                                           skip_special_tokens, strip, drop a trailing stop string, strip.
"""
import json
import os
import tempfile

import torch
from transformers import CLIPImageProcessor, CLIPVisionModel, LlamaTokenizer

from .common import GOLDEN_DIR
from .models_aligngpt import build, reference_forward
from .models_dir import ROOT, bf16_round, expand2square
from .tokenizer import _ref_utils

OUT = os.path.join(GOLDEN_DIR, "run_tiny")
QUESTIONS = ["what is in the image?", "describe the picture in detail."]
MAX_NEW = 24


def _tokenizer():
    import sentencepiece as spm

    os.makedirs(OUT, exist_ok=True)
    lines = ["the cat is on the table and the dog is in the park.", "what is in the picture? a small red car.",
             "describe the image in detail, please.", "there are two people near the window."] * 5
    with tempfile.TemporaryDirectory() as d:
        txt = os.path.join(d, "t.txt")
        with open(txt, "w") as f:
            f.write("\n".join(lines) + "\n")
        spm.SentencePieceTrainer.train(
            input=txt, model_prefix=os.path.join(OUT, "tokenizer"), model_type="bpe", vocab_size=64,
            character_coverage=1.0, byte_fallback=False, split_digits=True, normalization_rule_name="identity",
            add_dummy_prefix=True, remove_extra_whitespaces=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    os.remove(os.path.join(OUT, "tokenizer.vocab"))
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "legacy": False, "model_max_length": 2048,
                   "pad_token": None, "clean_up_tokenization_spaces": False, "tokenizer_class": "LlamaTokenizer",
                   "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, f, indent=2)
    tok = LlamaTokenizer.from_pretrained(OUT)
    assert tok.legacy is False and tok.vocab_size == 64
    return tok


def golden_run_tiny():
    tok = _tokenizer()
    conv_mod, mm, commit = _ref_utils()
    llm, proj, gate, ind = build()
    bf16_round(llm, proj, gate, ind)  # the checkpoint's values, as models_dir.py saves them
    clip = CLIPVisionModel.from_pretrained(os.path.join(ROOT, "clip_vision")).eval()
    proc = CLIPImageProcessor.from_pretrained(os.path.join(ROOT, "clip_vision"))
    from PIL import Image
    img = Image.open(os.path.join(ROOT, "image.png")).convert("RGB")
    sq = expand2square(img, tuple(int(255 * m) for m in proc.image_mean))
    pixels = proc.preprocess(sq, return_tensors="pt")["pixel_values"].float()
    cases = []
    with torch.no_grad():
        feats = clip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        for q in QUESTIONS:
            conv = conv_mod.conv_templates["vicuna_v1"].copy()
            conv.append_message(conv.roles[0], "<image>\n" + q)
            conv.append_message(conv.roles[1], None)
            prompt = conv.get_prompt()
            stop_str = conv.sep if conv.sep_style != conv_mod.SeparatorStyle.TWO else conv.sep2
            ids = mm.tokenizer_image_token(prompt, tok)
            trace, _ = reference_forward(llm, proj, gate, ind, [{"ids": ids, "labels": [-100] * len(ids)}], feats,
                                         "inference", 2048)
            out = llm(inputs_embeds=trace["inputs_embeds"], use_cache=True)
            gen = []
            for _ in range(MAX_NEW):
                nxt = int(out.logits[0, -1].argmax())
                gen.append(nxt)
                if nxt == tok.eos_token_id:
                    break
                past = out.past_key_values[0][0].shape[2]
                out = llm(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True,
                          attention_mask=torch.ones(1, past + 1, dtype=torch.long), position_ids=torch.tensor([[past]]))
            answer = tok.decode(gen, skip_special_tokens=True).strip()
            if answer.endswith(stop_str):
                answer = answer[:-len(stop_str)]
            answer = answer.strip()
            cases.append({"question": q, "prompt": prompt, "ids": ids, "generated": gen, "answer": answer,
                          "max_new_tokens": MAX_NEW})
    path = os.path.join(OUT, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/tools/golden/run.py golden_run_tiny", "reference_commit": commit,
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return path
