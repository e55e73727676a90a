#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/make_seeds.py          # rewrites corpus/ (the committed seeds)

Standard library only. Each seed is a small valid input written here (a safetensors file, a
stored zip, a torch.save-style pickle, a PNG, a config) or a small fixture copied from
tests/golden. Seeds are valid on purpose: the fuzzer mutates them into invalid ones, and a valid
seed reaches the deepest code. The issue 12 findings go to regressions/<target>/ (as a crash
found by scripts/fuzz does), so CI replays them too.
"""
import hashlib
import json
import pathlib
import shutil
import struct
import zipfile
import zlib

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden"
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"

# The storages pickle_in_zip.cpp puts next to the fuzzed data.pkl: key -> bytes.
STORAGES = {"0": 16, "1": 64, "2": 256, "3": 8}


def write(target, name, data, root=CORPUS):
    path = root / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def copy_golden(target, *names):
    for n in names:
        write(target, "golden-" + n.replace("/", "-"), (GOLDEN / n).read_bytes())


# ---- safetensors ------------------------------------------------------------------------------
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_raw(header, data=b""):
    return struct.pack("<Q", len(header)) + header + data


def safetensors(tensors, metadata=None, pad=8):
    """tensors: [(name, dtype, shape)]; data is a byte ramp."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape in tensors:
        n = DTYPE_BYTES[dt]
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((len(data) + i) % 251 for i in range(n))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((pad - len(text) % pad) % pad)
    return safetensors_raw(text, data)


def seeds_safetensors():
    t = "safetensors"
    write(t, "one_f32", safetensors([("w", "F32", [2, 2])]))
    write(t, "every_dtype", safetensors([("t." + d.lower(), d, [3]) for d in DTYPE_BYTES]))
    write(t, "metadata", safetensors([("a", "F16", [2, 3]), ("b", "BF16", [3])], {"format": "pt"}))
    write(t, "scalar_and_empty", safetensors([("s", "F32", []), ("e", "F32", [0, 4])]))
    write(t, "no_tensors", safetensors([]))
    copy_golden(t, "io/torch_save.expected.safetensors", "io/llama_st_sharded/model-00001-of-00004.safetensors")


# ---- pickles as torch.save writes them (protocol 2), and the protocol-4 forms ------------------
class Pickle:
    def __init__(self, proto=2):
        self.b = bytearray(b"\x80" + bytes([proto]))

    def op(self, o):
        self.b += o
        return self

    def str(self, s):
        s = s.encode()
        return self.op(b"X" + struct.pack("<I", len(s)) + s)

    def short_str(self, s):  # protocol 4
        s = s.encode()
        return self.op(b"\x8c" + bytes([len(s)]) + s)

    def int(self, v):
        if 0 <= v < 256:
            return self.op(b"K" + bytes([v]))
        if 0 <= v < 65536:
            return self.op(b"M" + struct.pack("<H", v))
        return self.op(b"J" + struct.pack("<i", v))

    def ints(self, vs):
        if len(vs) == 1:
            self.int(vs[0])
            return self.op(b"\x85")
        self.op(b"(")
        for v in vs:
            self.int(v)
        return self.op(b"t")

    def glob(self, module, name):
        return self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def memo(self, i):
        return self.op(b"q" + bytes([i]))

    def bytes(self):
        return bytes(self.b)


def tensor(p, storage, key, numel, size, stride, offset=0, parameter=False):
    """One _rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())."""
    if parameter:
        p.glob("torch._utils", "_rebuild_parameter").op(b"(")
    p.glob("torch._utils", "_rebuild_tensor_v2").op(b"((")
    p.str("storage").glob("torch", storage).str(key).str("cpu").int(numel).op(b"tQ")
    p.int(offset).ints(size).ints(stride).op(b"\x89").glob("collections", "OrderedDict").op(b")R").op(b"tR")
    if parameter:
        p.op(b"\x88").glob("collections", "OrderedDict").op(b")R").op(b"tR")


def state_dict(tensors, ordered=False):
    """tensors: [(name, storage, key, numel, size, stride, offset)]"""
    p = Pickle()
    if ordered:  # collections.OrderedDict() with the _metadata BUILD torch.save writes
        p.glob("collections", "OrderedDict").op(b")R").memo(0)
    else:
        p.op(b"}")
    p.op(b"(")
    for name, storage, key, numel, size, stride, offset in tensors:
        p.str(name)
        tensor(p, storage, key, numel, size, stride, offset)
    p.op(b"u")
    if ordered:
        p.op(b"}").str("_metadata").op(b"}").op(b"s").op(b"b")
    return p.op(b".").bytes()


def protocol4_pickle():
    """A state dict in the protocol-4 forms: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, BINGET."""
    body = Pickle(proto=4)
    body.b = bytearray()
    body.op(b"}\x94(").short_str("w")
    body.short_str("torch._utils").op(b"\x94").short_str("_rebuild_tensor_v2").op(b"\x94\x93\x94")
    body.op(b"((").short_str("storage").op(b"\x94").short_str("torch").op(b"\x94").short_str("FloatStorage")
    body.op(b"\x94\x93\x94").short_str("0").short_str("cpu").int(4).op(b"t\x94Q")
    body.int(0).ints([2, 2]).ints([2, 1]).op(b"\x89").short_str("collections").short_str("OrderedDict")
    body.op(b"\x93\x94)R\x94t\x94R\x94")
    # memo: 3 _rebuild_tensor_v2, 4 "storage", 7 FloatStorage, 9 OrderedDict: a second view, through BINGET
    body.short_str("v").op(b"h\x03")
    body.op(b"((h\x04h\x07").short_str("0").short_str("cpu").int(4).op(b"tQ")
    body.int(1).ints([3]).ints([1]).op(b"\x89h\x09)R").op(b"tR").op(b"u.")
    frame = bytes(body.b)
    return b"\x80\x04\x95" + struct.pack("<Q", len(frame)) + frame


def zip_stored(files, force_zip64=False):
    """A stored zip (as torch.save writes), entries in order."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=force_zip64) as f:
                f.write(data)
    return buf.getvalue()


def torch_bin(pkl, storages, root="archive", byteorder=True, force_zip64=False):
    files = [(root + "/data.pkl", pkl)]
    if byteorder:
        files.append((root + "/byteorder", b"little"))
    files += [(root + "/data/" + k, v) for k, v in storages.items()]
    files.append((root + "/version", b"3\n"))
    return zip_stored(files, force_zip64)


# Pickles whose storages match STORAGES (for pickle_in_zip) and the files they make.
PICKLES = {
    "f32_matrix": state_dict([("w", "FloatStorage", "0", 4, [2, 2], [2, 1], 0)]),
    "ordered_two_views": state_dict(
        [("a", "FloatStorage", "1", 16, [4, 4], [4, 1], 0), ("b.t", "FloatStorage", "1", 16, [2, 3], [1, 4], 5)], ordered=True),
    "dtypes_a": state_dict([
        ("h", "HalfStorage", "1", 32, [32], [1], 0), ("bf", "BFloat16Storage", "2", 128, [8, 16], [16, 1], 0),
        ("l", "LongStorage", "3", 1, [], [], 0), ("i", "IntStorage", "0", 4, [4], [1], 0)]),
    "dtypes_b": state_dict([
        ("d", "DoubleStorage", "1", 8, [8], [1], 0), ("s", "ShortStorage", "3", 4, [2, 2], [2, 1], 0),
        ("c", "CharStorage", "0", 16, [16], [1], 0), ("u", "ByteStorage", "2", 256, [16, 16], [16, 1], 0)]),
    "dtypes_c": state_dict([("bool", "BoolStorage", "0", 16, [4, 4], [1, 4], 0), ("f", "FloatStorage", "1", 16, [16], [1], 0)]),
    "tied_and_empty": state_dict(
        [("x", "FloatStorage", "0", 4, [4], [1], 0), ("y", "FloatStorage", "0", 4, [4], [1], 0),
         ("z", "FloatStorage", "0", 4, [0, 3], [3, 1], 0)]),
    "protocol4": protocol4_pickle(),
}


def parameter_pickle():
    p = Pickle().op(b"}(").str("p")
    tensor(p, "FloatStorage", "0", 4, [4], [1], parameter=True)
    return p.op(b"u.").bytes()


PICKLES["parameter"] = parameter_pickle()


def storages_for_zip():
    return {k: bytes(range(n)) for k, n in STORAGES.items()}


def seeds_pickles_and_zips():
    torch_save = zipfile.ZipFile(GOLDEN / "io/torch_save.bin")
    golden_pkl = torch_save.read("torch_save/data.pkl")
    for name, pkl in PICKLES.items():
        write("pickle", name, pkl)
        write("pickle_in_zip", name, pkl)
    write("pickle", "golden-torch_save-data.pkl", golden_pkl)
    write("pickle_in_zip", "golden-torch_save-data.pkl", golden_pkl)

    write("torch_bin", "f32_matrix", torch_bin(PICKLES["f32_matrix"], storages_for_zip()))
    write("torch_bin", "dtypes_no_byteorder", torch_bin(PICKLES["dtypes_a"], storages_for_zip(), byteorder=False))
    write("torch_bin", "views_root_named", torch_bin(PICKLES["ordered_two_views"], storages_for_zip(), root="model"))
    write("torch_bin", "zip64", torch_bin(PICKLES["protocol4"], storages_for_zip(), force_zip64=True))
    copy_golden("torch_bin", "io/torch_save.bin", "io/llama_bin_sharded/pytorch_model-00001-of-00004.bin")

    write("zip", "empty", zip_stored([]))
    write("zip", "three_entries", zip_stored([("a/x", b"hello"), ("a/y", b""), ("a/data/0", bytes(64))]))
    write("zip", "zip64", zip_stored([("a/x", b"hello"), ("a/data/0", bytes(16))], force_zip64=True))
    copy_golden("zip", "io/torch_save.bin")


# ---- images (the target reads 4 settings bytes first: see image.cpp) ---------------------------
def png(width, height, color_type, bit_depth, rows, palette=None, trns=None, interlace=0, raw=None):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace))
    if palette:
        out += chunk(b"PLTE", palette)
    if trns:
        out += chunk(b"tRNS", trns)
    if raw is None:  # each filter type in turn (any filter is valid on any bytes)
        raw = b"".join(bytes([y % 5]) + r for y, r in enumerate(rows))
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def adam7_gray8(width, height):
    """The filtered scanlines of an interlaced 8-bit gray image, pass by pass (PNG spec, Adam7)."""
    raw = b""
    for xs, ys, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        cols, rows = range(xs, width, dx), range(ys, height, dy)
        if cols and rows:
            raw += b"".join(b"\x00" + bytes((x * 17 + y * 5) % 256 for x in cols) for y in rows)
    return raw


def seeds_images():
    t = "image"
    settings = {"pad_crop_resize": bytes([7, 2, 31, 15]), "square_crop": bytes([6, 0, 15, 31]),
                "no_crop": bytes([4, 3, 7, 7]), "no_resize": bytes([3, 4, 63, 15])}
    w, h = 9, 6
    pngs = {
        "rgb8.png": png(w, h, 2, 8, [bytes((x * 29 + y * 7 + c * 50) % 256 for x in range(w) for c in range(3)) for y in range(h)]),
        "gray8.png": png(w, h, 0, 8, [bytes((x * 31 + y * 11) % 256 for x in range(w)) for y in range(h)]),
        "rgba8.png": png(4, 7, 6, 8, [bytes((x * 13 + y * 3 + c * 60) % 256 for x in range(4) for c in range(4)) for y in range(7)]),
        "gray_alpha16.png": png(3, 3, 4, 16, [bytes((x + y + c) % 256 for x in range(3 * 4) for c in range(1)) for y in range(3)]),
        "palette_trns.png": png(5, 4, 3, 4, [bytes([0x01, 0x23, 0x40]) for _ in range(4)], palette=bytes(range(48)), trns=b"\x00\x80"),
        "gray8_interlaced.png": png(11, 5, 0, 8, [], interlace=1, raw=adam7_gray8(11, 5)),
        "gray1.png": png(11, 5, 0, 1, [b"\xa5\x5a" for _ in range(5)]),
    }
    for i, (name, data) in enumerate(pngs.items()):
        key = list(settings)[i % len(settings)]
        write(t, key + "-" + name, settings[key] + data)
    for n in ("images/tiny_7x5.png", "images/gray16_16x8.png", "images/palette_64x48.png", "images/photo_192x144.jpg"):
        write(t, "golden-" + n.split("/")[-1], settings["pad_crop_resize"] + (GOLDEN / n).read_bytes())


# ---- JSON -------------------------------------------------------------------------------------
def dumps(o):
    return json.dumps(o, indent=1)


def seeds_json():
    copy_golden("config_json", "llama_tiny/config.json", "model_dirs/aligngpt_bin/config.json",
                "model_dirs/aligngpt_pretrain/config.json", "model_dirs/clip_vision/config.json",
                "clip_vision_tiny/config.json")
    llama = json.loads((GOLDEN / "llama_tiny/config.json").read_text())
    write("config_json", "llama_rope_linear", dumps(dict(llama, rope_scaling={"type": "linear", "factor": 2.0})))
    write("config_json", "llama3_rope_eos_list", dumps(dict(llama, eos_token_id=[2, 3], num_key_value_heads=2, rope_theta=500000.0,
                                                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})))
    write("config_json", "clip_full", dumps({"model_type": "clip", "projection_dim": 16, "logit_scale_init_value": 2.6592,
                                             "vision_config": {"hidden_size": 32, "num_attention_heads": 4, "image_size": 28,
                                                               "patch_size": 14, "num_hidden_layers": 2, "hidden_act": "gelu"},
                                             "text_config": {"hidden_size": 32, "num_attention_heads": 4, "vocab_size": 100,
                                                             "pad_token_id": None, "max_position_embeddings": 16}}))
    write("config_json", "clip_text", dumps({"model_type": "clip_text_model", "hidden_size": 24, "num_attention_heads": 3,
                                             "eos_token_id": 2, "layer_norm_eps": 1e-05}))

    copy_golden("index_json", "io/llama_st_sharded/model.safetensors.index.json",
                "io/llama_bin_sharded/pytorch_model.bin.index.json")

    copy_golden("preprocessor_json", "model_dirs/clip_vision/preprocessor_config.json", "images/preprocessor_config.clip336.json")
    write("preprocessor_json", "ints_and_scalars", dumps({"size": 12, "crop_size": 10, "resample": 2, "image_mean": 0.5,
                                                         "image_std": 0.25, "do_convert_rgb": True}))
    write("preprocessor_json", "no_crop_lanczos", dumps({"size": {"shortest_edge": 9}, "do_center_crop": False, "resample": 1,
                                                        "do_rescale": False, "rescale_factor": 2.0}))
    write("preprocessor_json", "crop_larger_hamming", dumps({"size": {"shortest_edge": 4}, "crop_size": {"height": 11, "width": 6},
                                                            "resample": 5, "do_normalize": False, "do_resize": False}))


# ---- the aligngpt command line (cli.cpp: NUL-separated argv; names of cli.cpp's scratch tree) ---
def seeds_cli():
    def w(name, *argv):
        write("cli", name, "\0".join(argv))
    w("trace_ids", "trace", "-m", "@/model", "--vision-tower", "@/tower", "--image", "@/img.png", "--input-ids", "1,2,-200,3",
      "--align-level", "5", "--dtype", "bf16", "-o", "@/out/trace.safetensors", "-q")
    w("trace_prompt", "trace", "--model=@/model", "--pixels", "@/img.png", "-p", "What is it?", "--conv-mode", "plain",
      "--tokenizer", "@/model", "--out", "@/t.safetensors", "--mm_projector", "@/proj.bin", "--base-llm", "@/model")
    w("trace_ids_out_of_vocab", "trace", "-m", "@/model", "--image", "@/img.png", "--input_ids", "-200,32000", "-o", "x")
    w("run", "run", "-m", "@/model", "--image", "@/img.png", "-p", "hi", "-n", "16", "--temp", "0.7", "--top-p", "0.9",
      "--top-k", "40", "--repeat-penalty", "1.1", "-s", "7", "-t", "2", "--conv-mode", "llava_v0",
      "--image-aspect-ratio", "square", "--align-level", "auto", "--tokenizer", "@/model", "--dtype", "f16", "-v")
    w("run_aliases", "run", "--model-path", "@/model", "--image-file", "@/img.png", "--temperature=0", "--n_predict", "3",
      "--repetition_penalty", "1", "--weights-dtype", "f32")
    w("answer", "answer", "-m", "@/model", "--question-file", "@/q.jsonl", "--image-folder", "@/images", "--answers-file",
      "@/out/a.jsonl", "--batch-size", "4", "--resume", "-q", "--temperature", "0.2", "--max-new-tokens", "8", "-t", "1")
    w("score", "score", "--task", "vqa", "--answers-file", "a.jsonl", "--annotations", "ann.json")
    w("levels", "levels", "--clip", "@/model", "--data-path", "@/data.json", "--image-folder", "@/images", "--levels", "8",
      "-o", "@/out/levels.json", "--plot", "@/out/h.png", "-t", "2", "--batch-size", "16")
    w("train_pretrain", "train", "--stage", "pretrain", "-m", "@/model", "--vision_tower", "@/tower", "--data_path", "@/data.json",
      "--image_folder", "@/images", "--output_dir", "@/out", "--learning_rate", "1e-3", "--weight_decay", "0.0",
      "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "4", "--warmup_ratio", "0.03",
      "--lr_scheduler_type", "cosine", "--model_max_length", "2048", "--num_train_epochs", "1", "--save_steps", "500",
      "--save_total_limit", "1", "--logging_steps", "1", "--max_grad_norm", "1.0", "--seed", "42", "--version", "plain",
      "--image_aspect_ratio", "square", "--frozen-dtype", "bf16", "--memory-budget", "64", "-q")
    w("train_finetune", "train", "--stage=finetune", "--model", "@/model", "--data-path", "@/data.json", "-o", "@/out",
      "--pretrain-mm-mlp-align", "@/proj.bin", "--max-steps", "10", "--version", "v1", "--align-mode", "fixed:3",
      "--resume", "--no-shuffle", "--group-by-modality-length", "--gradient-checkpointing", "-t", "2")
    w("world", "world", "--profile", "test", "-o", "@/out/world", "--seed", "3", "--seeds", "2",
      "--variants", "aligngpt,llava,fixed:7", "-t", "1", "-q")
    w("bad_option", "run", "-m", "@/model", "--image", "@/img.png", "--bogus", "1")
    w("trace_device", "trace", "-m", "@/model", "--pixels", "@/img.png", "--input-ids", "1,-200", "-o", "@/t.safetensors",
      "--device", "cuda:1", "--cuda-mode", "fast")
    w("run_device", "run", "-m", "@/model", "--image", "@/img.png", "-p", "hi", "--device=cpu", "--dtype", "bf16")


# ---- tokenizers (llama_tokenizer.cpp: config NUL model; clip_tokenizer.cpp: vocab NUL merges) ---
def seeds_tokenizers():
    model = (GOLDEN / "tokenizer/tokenizer.model").read_bytes()
    config = (GOLDEN / "tokenizer/tokenizer_config.json").read_bytes()
    write("llama_tokenizer", "golden-tokenizer", config + b"\0" + model)
    write("llama_tokenizer", "golden-model-no-config", b"{}\0" + model)
    write("llama_tokenizer", "legacy-eos-strip", dumps({"legacy": True, "add_eos_token": True, "clean_up_tokenization_spaces": True,
                                                       "model_max_length": 1e30, "pad_token": "<unk>",
                                                       "eos_token": {"content": "</s>", "lstrip": True, "rstrip": True}}).encode()
          + b"\0" + model)

    vocab = (GOLDEN / "levels/clip/vocab.json").read_bytes()
    merges = (GOLDEN / "levels/clip/merges.txt").read_bytes()
    write("clip_tokenizer", "golden-levels-clip", vocab + b"\0" + merges)
    small = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "c": 3, "at</w>": 4, "cat</w>": 5, "a": 6, "t</w>": 7}
    write("clip_tokenizer", "small", json.dumps(small).encode() + b"\0#version: 0.2\na t</w>\nc at</w>\n")
    write("clip_tokenizer", "no_merges", json.dumps(small).encode())


# ---- evaluation files (questions.cpp: file A NUL file B) ----------------------------------------
def jsonl(*records):
    return "".join(json.dumps(r) + "\n" for r in records)


def seeds_questions():
    t = "questions"
    qs = jsonl({"question_id": 1, "image": "a.png", "text": "Is there a cat?", "category": "adversarial"},
               {"question_id": "q-2", "image": "b.jpg", "text": "Ünïcode 日本? \u2028"})
    ans = jsonl({"question_id": 1, "prompt": "Is there a cat?", "text": "Yes, there is.", "answer_id": "x", "model_id": "m",
                 "metadata": {}}, {"question_id": "q-2", "prompt": "", "text": "No"})
    write(t, "questions_and_resume", qs + "\0" + ans)
    write(t, "questions_torn_resume", qs + "\0" + ans[:-9])
    write(t, "pope", jsonl({"question_id": 1, "label": "yes", "category": "random"}, {"question_id": "q-2", "label": "No"})
          + "\0" + ans)
    write(t, "mme", jsonl({"question_id": "count/1.png", "label": "Yes"}, {"question_id": "count/1.png", "answer": "No",
                                                                       "category": "count", "image": "1.png"})
          + "\0" + jsonl({"question_id": "count/1.png", "text": "yes"}, {"question_id": "count/1.png", "text": "No."}))
    write(t, "vqa_v2", json.dumps({"annotations": [{"question_id": 1, "answers": [{"answer": "two"}] * 3 + [{"answer": "2"}]},
                                                   {"question_id": "q-2", "answers": ["a dog", "dogs"]}]})
          + "\0" + jsonl({"question_id": 1, "text": "Two."}, {"question_id": "q-2", "text": "A dog's"}))
    write(t, "vqa_textvqa_jsonl", jsonl({"question_id": 1, "answers": ["coca-cola", "coke"]})
          + "\0" + jsonl({"question_id": 1, "text": "Coca Cola"}))
    write(t, "mc", jsonl({"question_id": 1, "answer": "B", "choices": ["x", "y", "z"]}, {"question_id": "q-2", "answer": 0})
          + "\0" + jsonl({"question_id": 1, "text": "(B) y"}, {"question_id": "q-2", "text": "A"}))


# ---- training records (train_records.cpp: the images are the three of its scratch folder) -------
TRAIN_IMAGES = ["tiny_7x5.png", "gray16_16x8.png", "photo_192x144.jpg"]


def seeds_train_records():
    t = "train_records"
    for stage in ("stage1", "stage2"):
        records = json.loads((GOLDEN / f"train_data/{stage}.json").read_text())
        for k, rec in enumerate(records):
            if "image" in rec:
                rec["image"] = TRAIN_IMAGES[k % len(TRAIN_IMAGES)]
        write(t, "golden-" + stage, dumps(records[:6]))
    conv = lambda *turns: [{"from": f, "value": v} for f, v in turns]
    write(t, "edge_cases", dumps([
        {"id": "gpt-first", "image": "tiny_7x5.png", "similarity": 7,
         "conversations": conv(("gpt", "hello"), ("human", "What <image> is it?"), ("gpt", "A \"quoted\" \\ answer"))},
        {"id": 5, "conversations": conv(("human", "text only </s> <s>"), ("gpt", ""))},
        {"id": "missing-image", "image": "absent.png", "similarity": 0, "conversations": conv(("human", "<image>"), ("gpt", "x"))},
        {"id": "no-sim", "image": "gray16_16x8.png", "conversations": conv(("human", "<image>\n<image>"), ("gpt", "two tags"))},
    ]))
    write(t, "empty_array", "[]")


# ---- checkpoints (checkpoint.cpp: files joined by "=ckpt-file=", a manifest written unless given) -
def checkpoint_seed(state, model, optimizer, manifest=None):
    parts = [json.dumps(state, indent=1).encode(), model, optimizer] + ([manifest] if manifest is not None else [])
    return b"=ckpt-file=".join(parts)


def seeds_checkpoint():
    t = "checkpoint"
    config = {"stage": "pretrain", "model": {"hidden_size": 4, "vocab_size": 32}, "learning_rate": 1e-3, "seed": 42, "shuffle": True}
    state = {"global_step": 7, "consecutive_nonfinite": 0, "config": config}
    params = [("model.mm_projector.0.weight", [4, 3]), ("model.mm_projector.0.bias", [4])]
    model = safetensors([(n, "F32", s) for n, s in params])
    moments = []
    for n, s in params:
        moments += [(n + ".exp_avg", "F32", s), (n + ".exp_avg_sq", "F32", s), (n + ".step", "F32", [])]
    # .step must be a whole count: the byte ramp of safetensors() is not, so write 7.0 by hand
    opt = bytearray(safetensors(moments))
    header_len = struct.unpack("<Q", opt[:8])[0]
    header = json.loads(opt[8:8 + header_len])
    for n, _ in params:
        lo = header[n + ".step"]["data_offsets"][0] + 8 + header_len
        opt[lo:lo + 4] = struct.pack("<f", 7.0)
    write(t, "resumable", checkpoint_seed(state, model, bytes(opt)))
    write(t, "config_differs", checkpoint_seed(dict(state, config=dict(config, learning_rate=5e-4)), model, bytes(opt)))
    write(t, "optimizer_raw_ramp", checkpoint_seed(state, model, safetensors(moments)))
    write(t, "model_only", b"=ckpt-file=".join([json.dumps(state).encode(), model]))
    listed = {"model.safetensors": {"bytes": len(model), "sha256": hashlib.sha256(model).hexdigest()}}
    manifest = json.dumps({"format": "aligngpt-checkpoint", "version": 1, "step": 7, "files": listed}, indent=1, sort_keys=True) + "\n"
    write(t, "given_manifest", checkpoint_seed(state, model, bytes(opt), manifest.encode()))
    # Found while writing this target: trainer_state.json's fields were read with nlohmann's at()
    # and get<>() (an exception naming no file); trainer_state::read checks them now.
    for name, bad in (("no-config", {"global_step": 7, "consecutive_nonfinite": 0}),
                      ("step-as-string", dict(state, global_step="7")), ("array", [])):
        write(t, "trainer-state-" + name, checkpoint_seed(bad, model, bytes(opt)), REGRESSIONS)


# ---- regressions: the issue 12 findings, one file each (also unit tests) -----------------------
def regressions():
    r = REGRESSIONS
    write("config_json", "issue12-1-nested-100000", '{"rope_scaling":' + "[" * 100000 + "]" * 100000 + "}", r)
    llama = json.loads((GOLDEN / "llama_tiny/config.json").read_text())
    write("config_json", "issue12-2-rope-1e300", dumps(dict(llama, rope_scaling={"type": "linear", "factor": 2.0,
                                                                                 "original_max_position_embeddings": 1e300})), r)
    aligngpt = json.loads((GOLDEN / "model_dirs/aligngpt_bin/config.json").read_text())
    write("config_json", "issue12-6-select-layer-2pow64-2",
          dumps(aligngpt).replace('"mm_vision_select_layer": -2', '"mm_vision_select_layer": 18446744073709551614'), r)
    write("preprocessor_json", "issue12-3-crop-20000", '{"crop_size": 20000}', r)
    write("preprocessor_json", "issue12-3-crop-65536", '{"crop_size": {"height": 65536, "width": 65536}}', r)
    write("safetensors", "issue12-5-zero-dim-overflow",
          safetensors_raw(b'{"x":{"dtype":"F32","shape":[2147483648,4294967296,0],"data_offsets":[0,0]}}'), r)
    # A memoised 1000-tuple of ints, reused as torch.Size's argument 2000 times (a small version).
    p = Pickle().op(b"(")
    for i in range(1000):
        p.int(i)
    p.op(b"t").memo(1).op(b"(")
    for _ in range(2000):
        p.glob("torch", "Size").op(b"h\x01\x85R")
    write("pickle", "issue12-4-memo-amplification", p.op(b"t.").bytes(), r)


if __name__ == "__main__":
    shutil.rmtree(CORPUS, ignore_errors=True)
    seeds_safetensors()
    seeds_pickles_and_zips()
    seeds_images()
    seeds_json()
    seeds_cli()
    seeds_tokenizers()
    seeds_questions()
    seeds_train_records()
    seeds_checkpoint()
    regressions()
    n = sum(1 for f in CORPUS.rglob("*") if f.is_file())
    print(f"make_seeds: {n} seed files under {CORPUS.relative_to(HERE.parent.parent)}")
