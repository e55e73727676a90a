"""Tokenizer and conversation-template goldens for include/aligngpt/tokenizer/llama.h and
include/aligngpt/conversation.h (tests/test_tokenizer.cpp, tests/test_conversation.cpp).

Written under tests/golden/tokenizer/:
  tokenizer.model        a small real SentencePiece BPE model trained here with the sentencepiece
                         trainer, in LLaMA's settings (byte_fallback, split_digits, identity
                         normalisation, dummy prefix, extra whitespace kept, <unk>/<s>/</s> = 0/1/2),
                         vocab 600 (256 of them byte pieces): a few tens of KB.
  tokenizer_config.json  the published checkpoints' fields (legacy false, add_bos_token true, ...).
  tokenizer_llama.json   for each text of CORPUS and legacy false/true: the ids of the REAL
                         transformers 4.31 slow LlamaTokenizer (tokenizer(text).input_ids), without
                         special tokens, tokenizer_image_token's ids (the official mm_utils.py),
                         and decode(ids) with and without skip_special_tokens; plus decodes of
                         hand-picked id lists (invalid UTF-8 byte pieces, specials in the middle).
  conversation.json      for plain, vicuna_v1, llava_v0 and llama_2, 1 and 3 turns, with and without
                         an image: the official conversation.py's get_prompt() (or its error) and
                         tokenizer_image_token's ids for legacy false.

The official repository is read, unpatched, from a git directory (the `fetch` mirror of
github:AlignGPT-VL/AlignGPT): ALIGNGPT_REF_GIT=/path/to/repo.git (default the mirror's path).
"""
import importlib
import json
import os
import subprocess
import sys
import tempfile

from .common import GOLDEN_DIR

TOK_DIR = os.path.join(GOLDEN_DIR, "tokenizer")
REF_GIT = os.environ.get("ALIGNGPT_REF_GIT", "/work/.mirror/AlignGPT-VL+AlignGPT/repo")

# Training text: English prose and chat turns, so that common words become pieces. Characters that
# never occur here (CJK, emoji, most accents) reach the encoder only through byte fallback.
TRAIN_LINES = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is in the image? ASSISTANT: A cat is sitting on a red sofa next to a window.",
    "USER: How many people are there? ASSISTANT: There are 3 people standing near the bus stop.",
    "Human: Describe the picture. Assistant: The picture shows a small dog playing in the park.",
    "[INST] <<SYS>> You are a helpful, respectful and honest assistant. <</SYS>> [/INST]",
    "Is there a person in the image? Answer the question using a single word or phrase. Yes",
    "What color is the car? The car is blue. Where is the bottle? It is on the table.",
    "The quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "Please describe the image in detail, including the objects, people and their actions.",
    "There is a man riding a bicycle down the street, and a woman walking with an umbrella.",
    "Numbers like 12, 345 and 2024 are split into single digits by the tokenizer.",
    "Answer with the option's letter from the given choices directly. A B C D",
    "The kitchen has a white refrigerator, a wooden table and four chairs around it.",
    "Two children are flying a kite on the beach; the sky is clear and the water is calm.",
]

# The texts whose encodings are compared. Multi-turn conversations with </s>, <image>, newlines,
# leading, trailing and double spaces, special tokens glued to words, Unicode (accents, CJK, emoji:
# byte fallback), the "▁" character itself, and empty or whitespace-only strings.
CORPUS = [
    "",
    " ",
    "  ",
    "\n",
    "Hello world",
    " Hello world",
    "  Hello  world  ",
    "Hello\nworld\n\nagain",
    "What is in the image?",
    "<image>\nWhat is in the image?",
    "<image>",
    "<image><image>",
    "Describe <image> and <image> please",
    "USER: <image>\nWhat is the cat doing? ASSISTANT:",
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat is this? "
    "ASSISTANT: A cat.</s>USER: What color is it? ASSISTANT: It is orange.</s>USER: Is it happy? "
    "ASSISTANT:",
    "</s>",
    "</s>USER:",
    "a</s>b",
    "a </s> b",
    "<s>",
    "<s>Hello</s>",
    " <s> Hello </s> ",
    "<unk>",
    "x<unk>y",
    "<s></s><unk>",
    "café naïve résumé",
    "日本語のテキスト",
    "emoji 🙂👍🏽 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "tab\there\r\nwindows",
    "12345 and 3.14159",
    "▁ leading underscore ▁▁ twice",
    "▁</s>▁",
    "\u00a0non-breaking\u00a0space",
    "Human: Hi###Assistant: Hello###",
    "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nWhat is it? [/INST] A dog. </s><s>[INST] Why? [/INST]",
]

# Id lists decoded as given (not produced by encode): byte pieces that are not valid UTF-8 (a lone
# continuation byte, a truncated sequence, an overlong form), specials at the start, middle and end.
def decode_cases(sp):
    b = lambda x: sp.piece_to_id("<0x%02X>" % x)  # noqa: E731
    word = sp.piece_to_id("▁the")
    hello = sp.encode("Hello")
    return [
        [b(0xE2), b(0x82), b(0xAC)],                    # "€" as three byte pieces
        [b(0x80)],                                        # lone continuation byte
        [b(0xE2), b(0x82)],                               # truncated sequence
        [b(0xC0), b(0xAF)],                               # overlong "/"
        [b(0xF0), b(0x9F), b(0x99), b(0x82), b(0xFF)],    # "🙂" then an invalid byte
        [word, b(0xE2), word],                            # truncated sequence between pieces
        [1] + hello + [2],
        [2] + hello + [2] + hello,
        [0, word, 0],
        [1, 1, 2, 2],
        [word],
        [],
    ]


def _train(path_prefix):
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as d:
        txt = os.path.join(d, "train.txt")
        with open(txt, "w", encoding="utf-8") as f:
            for _ in range(3):
                f.write("\n".join(TRAIN_LINES) + "\n")
        spm.SentencePieceTrainer.train(
            input=txt, model_prefix=path_prefix, model_type="bpe", vocab_size=600,
            character_coverage=1.0, byte_fallback=True, split_digits=True,
            normalization_rule_name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            unk_surface=" \u2047 ", num_threads=1, shuffle_input_sentence=False,
            input_sentence_size=0, seed_sentencepiece_size=1000000, minloglevel=2)
    os.remove(path_prefix + ".vocab")


def _ref_utils():
    """The official src/utils (constants, conversation, mm_utils) as a package, unpatched."""
    d = tempfile.mkdtemp()
    pkg = os.path.join(d, "aligngpt_ref_utils")
    os.makedirs(pkg)
    commit = subprocess.check_output(["git", "--git-dir", REF_GIT, "rev-parse", "HEAD"], text=True).strip()
    for f in ["__init__.py", "constants.py", "conversation.py", "mm_utils.py"]:
        src = subprocess.check_output(["git", "--git-dir", REF_GIT, "show", f"HEAD:src/utils/{f}"])
        with open(os.path.join(pkg, f), "wb") as out:
            out.write(src)
    sys.path.insert(0, d)
    conv = importlib.import_module("aligngpt_ref_utils.conversation")
    mm = importlib.import_module("aligngpt_ref_utils.mm_utils")
    return conv, mm, commit


def _tokenizers():
    from transformers import LlamaTokenizer

    # The fields of vicuna-7b-v1.5's tokenizer_config.json that the slow tokenizer reads.
    cfg = {
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "legacy": False, "model_max_length": 4096, "pad_token": None, "padding_side": "right",
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False},
        "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False},
        "unk_token": {"__type": "AddedToken", "content": "<unk>", "lstrip": False, "normalized": False,
                      "rstrip": False, "single_word": False},
    }
    with open(os.path.join(TOK_DIR, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    new = LlamaTokenizer.from_pretrained(TOK_DIR)
    old = LlamaTokenizer.from_pretrained(TOK_DIR, legacy=True)
    assert new.legacy is False and old.legacy is True
    return new, old


def golden_tokenizer_llama():
    import sentencepiece as spm
    import transformers

    os.makedirs(TOK_DIR, exist_ok=True)
    _train(os.path.join(TOK_DIR, "tokenizer"))
    new, old = _tokenizers()
    _, mm, commit = _ref_utils()
    sp = spm.SentencePieceProcessor(model_file=os.path.join(TOK_DIR, "tokenizer.model"))

    cases = []
    for text in CORPUS:
        for legacy, tok in (("false", new), ("true", old)):
            ids = tok(text).input_ids
            cases.append({
                "text": text, "legacy": legacy == "true",
                "tokens": tok.tokenize(text),
                "ids": ids,
                "ids_no_special": tok(text, add_special_tokens=False).input_ids,
                "image_ids": mm.tokenizer_image_token(text, tok),
                "decode": tok.decode(ids),
                "decode_skip": tok.decode(ids, skip_special_tokens=True),
            })
    decodes = [{"ids": ids, "decode": new.decode(ids), "decode_skip": new.decode(ids, skip_special_tokens=True)}
               for ids in decode_cases(sp)]
    out = {
        "generator": "tests/tools/golden/tokenizer.py golden_tokenizer_llama",
        "transformers": transformers.__version__, "sentencepiece": spm.__version__,
        "reference_commit": commit, "vocab_size": new.vocab_size,
        "cases": cases, "decodes": decodes,
    }
    path = os.path.join(TOK_DIR, "tokenizer_llama.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return path


TURNS = [("What is in the image?", "A cat on a sofa."),
         ("What color is it?", "It is orange.\nMostly."),
         ("Is it  happy? ", None)]


def golden_conversation():
    conv_mod, mm, commit = _ref_utils()
    new, _ = _tokenizers()
    out = {"generator": "tests/tools/golden/tokenizer.py golden_conversation", "reference_commit": commit,
           "cases": []}
    for name in ["plain", "vicuna_v1", "llava_v0", "llama_2"]:
        for n_turns in (1, 3):
            for image in (False, True):
                conv = conv_mod.conv_templates[name].copy()
                turns = [(TURNS[-1][0], None)] if n_turns == 1 else TURNS
                msgs = []
                for i, (q, a) in enumerate(turns):
                    if i == 0 and image:
                        q = "<image>\n" + q
                    conv.append_message(conv.roles[0], q)
                    conv.append_message(conv.roles[1], a)
                    msgs += [q, a]
                case = {"template": name, "turns": n_turns, "image": image, "messages": msgs}
                try:
                    prompt = conv.get_prompt()
                    case["prompt"] = prompt
                    case["ids"] = mm.tokenizer_image_token(prompt, new)
                except Exception as e:  # noqa: BLE001 - the reference's failure is the expected result
                    case["error"] = type(e).__name__
                case["sep"], case["sep2"] = conv.sep, conv.sep2
                # cli.py's stop string (KeywordsStoppingCriteria's keyword)
                case["stop_str"] = conv.sep if conv.sep_style != conv_mod.SeparatorStyle.TWO else conv.sep2
                out["cases"].append(case)
    path = os.path.join(TOK_DIR, "conversation.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return path
