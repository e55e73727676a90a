"""Goldens for include/aligngpt/tokenizer/clip.h and include/aligngpt/train/levels.h
(tests/test_clip_tokenizer.cpp, tests/test_levels.cpp).

There is no real CLIP vocabulary offline, so a small one in the real format is built here: the 256
byte-unicode symbols, their "</w>" variants, MERGES merges learned from TRAIN_TEXT by the plain BPE
trainer below (CLIP's word-end convention), then <|startoftext|> and <|endoftext|> (the last id,
as in CLIP's 49406/49407). The tokenizer outputs are the REAL transformers 4.31 CLIPTokenizer
(slow). ftfy is not installed in the golden environment, so CLIPTokenizer takes its BasicTokenizer
path (clean, CJK spacing, NFC, lower-case, no accent stripping, no punctuation split); clip.h
matches that path.

Written under tests/golden/levels/:
  clip/{config.json, model.safetensors, vocab.json, merges.txt, preprocessor_config.json}
        a tiny CLIPModel (vision 28 px / 14 px patches, text vocab = len(vocab.json), 77 positions),
        weights filled as models_clip.fill_module does (hashfill by name)
  tokenizer.json   [{"text", "ids"}]: CLIPTokenizer(text, truncation=True, max_length=77).input_ids
  images/*.png     generated images (PNG only: JPEG decoders differ, see io/image.h)
  data.json        a LLaVA-format dataset of 16 records (images from tests/golden/images and images/)
  expected.json    {"levels": N, "clip_similarity": [...], "similarity": [...]}: CLIPModel cosines
                   (image_embeds . text_embeds) and the levels by the rule of train/levels.h

unicode_tables() prints the code-point tables of clip.h (regex's \\p{L} / \\p{N}, str.lower()).
"""
import collections
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
from transformers.models.clip.tokenization_clip import bytes_to_unicode

from .common import GOLDEN_DIR
from .models_clip import fill_module

OUT = os.path.join(GOLDEN_DIR, "levels")
CLIP_DIR = os.path.join(OUT, "clip")
MERGES = 320
N_LEVELS = 4

TRAIN_TEXT = """
a photo of a cat sitting on a red sofa next to the window. a dog playing in the park with a ball.
the quick brown fox jumps over the lazy dog. two children are flying a kite on the beach.
a man riding a bicycle down the street while a woman walks with an umbrella in the rain.
a bowl of fruit on a wooden table: apples, oranges and bananas. a city skyline at night.
a train arriving at the station. a plate of food with rice and vegetables. the sunset over the sea.
there is a white refrigerator in the kitchen and four chairs around the table.
an image of a green field with trees and a blue sky. people standing near the bus stop.
it's a picture of the mountains covered in snow. they're walking along the river bank.
colorful gradient, stripes and checkerboard patterns. a small square, a large circle.
"""

# Captions for the tokenizer golden: punctuation, digits, apostrophes (the contraction rule),
# accents, CJK (spaced by BasicTokenizer), emoji, control and zero-width characters, extra
# spaces, special-token text, upper case (lower-cased), Greek final sigma, and > 77 tokens.
CORPUS = [
    "",
    "   ",
    "a photo of a cat",
    "A Photo Of A CAT!!!",
    "the dog's ball, the cats' toys; it's they're we've I'm you'll he'd",
    "'s 'S ''s don't DON'T rock'n'roll",
    "1234 apples + 56 oranges = 1290 fruits (3.5 kg) 2024-11-30",
    "café naïve résumé Ångström ÉCOLE façade",
    "東京タワー と 北京 的 夜景 한국어",
    "emoji 🐱🐶 👍🏽 👨‍👩‍👧 ✨",
    "tabs\tand\nnew\r\nlines   and    spaces\u00a0nbsp\u3000ideographic",
    "zero\u200bwidth soft\u00adhyphen bom\ufeff ctrl\x07bell",
    "<|startoftext|>hello<|endoftext|> world <|ENDOFTEXT|>",
    "ΣΟΦΟΣ σοφός Σ",
    "Straße İstanbul ǅungla",
    "x²+y³=z¹ ½ ¾ Ⅻ ①",
    "trailing punctuation...?!",
    "www.example.com/path?q=1&r=2#frag",
    "a " * 100,
    "supercalifragilisticexpialidocious " * 3 + "pneumonoultramicroscopicsilicovolcanoconiosis",
    " ".join(f"word{i}" for i in range(60)),
]

# The dataset: (image, caption). Captions of varying relevance to the picture.
IMAGES_REF = ["landscape_500x333.png", "portrait_201x640.png", "square_336.png", "gray_160x100.png",
              "palette_64x48.png", "alpha_120x80.png", "upscale_150x97.png", "photo_192x144.pil_decoded.png"]
CAPTIONS = [
    "a wide landscape with hills under a blue sky",
    "a tall portrait of a person standing",
    "a square image with a colorful gradient",
    "a gray picture",
    "a small palette image with a few colors",
    "a transparent shape on a background",
    "stripes, 12 of them!",
    "a photo of a cat sitting on a red sofa next to the window",
    "a red square on white",
    "a green circle",
    "a checkerboard pattern of black and white squares",
    "noise",
    "the quick brown fox jumps over the lazy dog",
    "a train arriving at the station at night",
    "a bowl of fruit",
    "It's a café by the sea 🌅",
]


def unicode_tables():
    """The tables pasted into clip.h (run by hand: python3 -c 'from golden.levels import *; unicode_tables()')."""
    import regex
    blocks = [(0, 0x52F), (0x1E00, 0x1FFF), (0x2150, 0x218F), (0x2460, 0x24FF), (0x3000, 0x30FF),
              (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xF900, 0xFAFF), (0xFF00, 0xFFEF),
              (0x20000, 0x323AF)]
    cps = [cp for a, b in blocks for cp in range(a, b + 1)]

    def ranges(pred):
        out = []
        for cp in cps:
            if pred(chr(cp)):
                if out and out[-1][1] + 1 == cp:
                    out[-1][1] = cp
                else:
                    out.append([cp, cp])
        return out

    def dump(name, rs):
        items = [f"{{0x{a:X}, 0x{b:X}}}" for a, b in rs]
        print(f"inline constexpr cp_range {name}[] = {{")
        for i in range(0, len(items), 6):
            print("    " + ", ".join(items[i:i + 6]) + ",")
        print("};")
    L, N = regex.compile(r"\p{L}"), regex.compile(r"\p{N}")
    dump("letters", ranges(lambda c: L.match(c) is not None))
    dump("numbers", ranges(lambda c: N.match(c) is not None))
    runs = []   # [first, last, delta, stride]
    for cp in cps:
        lo = chr(cp).lower()
        if len(lo) != 1 or lo == chr(cp):
            continue
        d = ord(lo) - cp
        if runs and runs[-1][2] == d and cp - runs[-1][1] in (1, 2) and runs[-1][3] in (0, cp - runs[-1][1]):
            runs[-1][3] = cp - runs[-1][1]
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, d, 0])
    items = [f"{{0x{a:X}, 0x{b:X}, {d}, {max(s, 1)}}}" for a, b, d, s in runs]
    print("inline constexpr lower_run lower_runs[] = {")
    for i in range(0, len(items), 4):
        print("    " + ", ".join(items[i:i + 4]) + ",")
    print("};")


def train_bpe(text: str, n_merges: int):
    """Plain BPE over byte-unicode words, the last symbol of a word carrying "</w>" (CLIP's
    convention); the most frequent pair wins, ties to the smallest pair."""
    enc = bytes_to_unicode()
    words = collections.Counter(text.lower().split())
    seqs = {}
    for w, c in words.items():
        s = [enc[b] for b in w.encode("utf-8")]
        s[-1] += "</w>"
        seqs[tuple(s)] = c
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for s, c in seqs.items():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        out = {}
        for s, c in seqs.items():
            n, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    n.append(s[i] + s[i + 1])
                    i += 2
                else:
                    n.append(s[i])
                    i += 1
            out[tuple(n)] = out.get(tuple(n), 0) + c
        seqs = out
    return merges


def write_vocab(d: str):
    enc = bytes_to_unicode()
    merges = train_bpe(TRAIN_TEXT, MERGES)
    tokens = list(enc.values()) + [v + "</w>" for v in enc.values()] + ["".join(m) for m in merges]
    vocab = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return len(vocab)


def tokenizer(d: str) -> CLIPTokenizer:
    return CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"), model_max_length=77)


def make_images(d: str):
    os.makedirs(d, exist_ok=True)
    y, x = np.mgrid[0:60, 0:80]
    yc, xc = np.mgrid[0:70, 0:70]
    imgs = {}
    red = np.full((60, 80, 3), 255, np.uint8)
    red[15:45, 25:55] = (220, 20, 30)
    imgs["red_square.png"] = red
    circ = np.full((70, 70, 3), 240, np.uint8)
    circ[(yc - 35) ** 2 + (xc - 35) ** 2 < 600] = (30, 180, 40)
    imgs["green_circle.png"] = circ
    imgs["checker.png"] = (((y // 10 + x // 10) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    rng = np.random.default_rng(7)
    imgs["noise.png"] = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    stripes = np.zeros((40, 96, 3), np.uint8)
    stripes[:, :, 2] = ((np.arange(96)[None, :] // 8) % 2) * 200
    imgs["stripes.png"] = stripes
    imgs["night.png"] = (np.stack([y[:, :64] * 2, y[:, :64], 80 - y[:, :64]], -1)).astype(np.uint8)
    imgs["fruit.png"] = np.stack([x * 3 % 256, (x + y) * 2 % 256, y * 4 % 256], -1).astype(np.uint8)
    imgs["sea.png"] = np.stack([x * 0 + 30, y * 3, 120 + y], -1).astype(np.uint8)
    for name, a in imgs.items():
        Image.fromarray(a).save(os.path.join(d, name))
    return sorted(imgs)


def golden_levels():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(CLIP_DIR)
    V = write_vocab(CLIP_DIR)
    tok = tokenizer(CLIP_DIR)
    assert tok.fix_text is None, "ftfy is installed: the golden must come from the BasicTokenizer path"
    with open(os.path.join(OUT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump([{"text": t, "ids": tok(t, truncation=True, max_length=77).input_ids} for t in CORPUS], f,
                  ensure_ascii=False, indent=0)

    text = dict(vocab_size=V, hidden_size=40, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=V - 2, eos_token_id=V - 1, pad_token_id=1)
    vis = dict(hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4, image_size=28,
               patch_size=14)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vis, projection_dim=24)).eval()
    fill_module(model)
    model.save_pretrained(CLIP_DIR, safe_serialization=True)
    for f in os.listdir(CLIP_DIR):
        if f not in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
            os.remove(os.path.join(CLIP_DIR, f))
    proc = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    proc.save_pretrained(CLIP_DIR)

    gen = make_images(os.path.join(OUT, "images"))
    src = os.path.join(GOLDEN_DIR, "images")
    paths = [("../images/" + n, os.path.join(src, n)) for n in IMAGES_REF] + \
            [("images/" + n, os.path.join(OUT, "images", n)) for n in
             ["red_square.png", "green_circle.png", "checker.png", "noise.png", "stripes.png", "night.png",
              "fruit.png", "sea.png"]]
    assert len(paths) == len(CAPTIONS) == 16 and set(gen) <= {p[0][7:] for p in paths}
    records, cos = [], []
    for i, ((rel, path), cap) in enumerate(zip(paths, CAPTIONS)):
        records.append({"id": f"{i:09d}", "image": rel, "extra": {"source": "golden", "k": [i, None, True]},
                        "conversations": [{"from": "human", "value": "<image>\nDescribe the image briefly."},
                                          {"from": "gpt", "value": cap}]})
        px = proc(images=Image.open(path).convert("RGB"), return_tensors="pt").pixel_values
        ids = tok(cap, truncation=True, max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values=px)
        cos.append(float((out.image_embeds[0] * out.text_embeds[0]).sum()))
    # a record with "similarity" already present (overwritten) and keys in a non-sorted order
    records[3] = {"similarity": 99, "image": records[3]["image"], "id": records[3]["id"],
                  "conversations": records[3]["conversations"]}
    n = len(cos)
    order = sorted(range(n), key=lambda i: cos[i])   # stable: ties keep file order
    levels = [0] * n
    for r, i in enumerate(order):
        levels[i] = r * N_LEVELS // n
    # the C++ side reproduces the cosines within 1e-4; the ranking must not depend on that much
    gaps = [cos[order[r + 1]] - cos[order[r]] for r in range(n - 1)]
    assert min(gaps[r - 1] for r in range(n // N_LEVELS, n, n // N_LEVELS)) > 3e-4, gaps
    with open(os.path.join(OUT, "data.json"), "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=1)
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"levels": N_LEVELS, "clip_similarity": cos, "similarity": levels, "min_gap": min(gaps)}, f, indent=1)
    return OUT
