"""Golden fixtures for image decoding and CLIP preprocessing (include/aligngpt/io/{image,resample}.h),
read by tests/test_image.cpp.

    /usr/bin/python3 tests/tools/make_golden.py image_clip image_resample

Inputs: small generated images written to tests/golden/images/ (committed; the C++ test decodes
the same files) plus noise images that both sides generate from hashfill (not stored).
References: the REAL transformers 4.31 CLIPImageProcessor (from the exact preprocessor_config.json
of openai/clip-vit-large-patch14-336), after AlignGPT's expand2square (PIL Image.new + paste) for
mode "pad", and PIL's Image.resize for the resampler alone.

Full arrays would not fit the fixture budget (one pixel_values is 1.35 MB), so most references are
stored as one FNV-1a 64 digest per row (int64 bit patterns): a mismatch still says which rows
differ. Small things are stored whole: PIL's decode of the JPEG (as a lossless PNG), and the
pixel_values of a 16x16 image holding every byte value (the rescale/normalise table).
"""
import io
import json
import os
import struct
import zlib

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor
from transformers.image_transforms import get_resize_output_image_size

from .common import GOLDEN_DIR, fnv1a64, hashfill, save

IMAGES = os.path.join(GOLDEN_DIR, "images")

# openai/clip-vit-large-patch14-336 preprocessor_config.json, verbatim.
CLIP336_CONFIG = {
    "crop_size": 336,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 336,
}


# --- helpers ----------------------------------------------------------------------------------

BAND = 16  # rows per digest


def fnv_bands(a: np.ndarray, band: int = BAND) -> torch.Tensor:
    """One FNV-1a 64 per band of `band` rows (first axis; the last band may be shorter) of a
    C-contiguous array's bytes, as int64 bit patterns."""
    a = np.ascontiguousarray(a)
    rows = a.reshape(a.shape[0], -1)
    n = (rows.shape[0] + band - 1) // band
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = _fnv_bytes(rows[i * band:(i + 1) * band].tobytes())
    return torch.from_numpy(out.view(np.int64).copy())


def _fnv_bytes(b: bytes) -> int:
    # the plain definition, as golden::fnv1a in tests/support/golden.h
    h = 0xCBF29CE484222325
    for c in b:
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def noise_u8(name: str, h: int, w: int) -> np.ndarray:
    """HWC uint8 noise: floor((x + 1) * 128) of hashfill(name, (h, w, 3), 1.0); exact in float32,
    reproduced by noise_image() in tests/test_image.cpp."""
    x = hashfill(name, (h, w, 3), 1.0).numpy()
    v = np.floor((x + np.float32(1.0)) * np.float32(128.0))
    return np.clip(v, 0, 255).astype(np.uint8)


def expand2square(pil_img, background_color):
    """AlignGPT's mm_utils.expand2square, verbatim logic."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def _png_chunk(t: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)


def write_png16_rgb(path: str, a16: np.ndarray):
    """A 16-bit RGB PNG (Pillow cannot write one), filter 0 on every row."""
    h, w, _ = a16.shape
    raw = b"".join(b"\x00" + a16[y].astype(">u2").tobytes() for y in range(h))
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    data += _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def write_png_raw(path: str, w: int, h: int, depth: int, color: int, idat: bytes):
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
    data += _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def _grid(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return y, x


def _structured(h, w, seed_name):
    """Gradients, hard edges, a checkerboard, disks and a noise patch: exercises every tap weight
    while compressing well as PNG."""
    y, x = _grid(h, w)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    img = np.stack([r, g, b], axis=-1)
    cb = ((x // 8 + y // 8) % 2 == 0) & (x < w // 3) & (y > h // 2)
    img[cb] = [250, 250, 250]
    for cx, cy, rad, col in [(0.7, 0.3, 0.18, (10, 20, 230)), (0.25, 0.2, 0.1, (255, 0, 0)), (0.6, 0.75, 0.12, (0, 0, 0))]:
        m = (x - cx * w) ** 2 + (y - cy * h) ** 2 < (rad * min(h, w)) ** 2
        img[m] = col
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    ph, pw = min(16, h // 3), min(16, w // 3)
    if ph > 0 and pw > 0:
        img[h - ph - 2:h - 2, w - pw - 2:w - 2] = noise_u8(seed_name + ".patch", ph, pw)
    return img


def _photo_like(h, w):
    """Smooth blobs and soft edges (what JPEG is for)."""
    y, x = _grid(h, w)
    r = 120 + 80 * np.sin(x / 23.0) + 30 * np.cos(y / 17.0)
    g = 100 + 60 * np.cos((x + y) / 31.0) + 40 * (x > w * 0.6)
    b = 90 + 70 * np.sin(y / 19.0) * np.sin(x / 41.0)
    img = np.stack([r, g, b], axis=-1)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_inputs():
    """Writes tests/golden/images/*; returns {case: path}. Deterministic for a given Pillow/zlib."""
    os.makedirs(IMAGES, exist_ok=True)
    files = {}

    def put(case, fname, pil_img, **kw):
        p = os.path.join(IMAGES, fname)
        pil_img.save(p, **kw)
        files[case] = p

    put("landscape", "landscape_500x333.png", Image.fromarray(_structured(333, 500, "landscape")), optimize=True)
    put("portrait", "portrait_201x640.png", Image.fromarray(_structured(640, 201, "portrait")), optimize=True)
    put("tiny", "tiny_7x5.png", Image.fromarray(noise_u8("tiny", 5, 7)))
    put("square", "square_336.png", Image.fromarray(_structured(336, 336, "square")), optimize=True)
    put("upscale", "upscale_150x97.png", Image.fromarray(_structured(97, 150, "upscale")), optimize=True)
    rgba = np.concatenate([_structured(80, 120, "alpha"),
                           np.tile(np.linspace(0, 255, 120).astype(np.uint8), (80, 1))[..., None]], axis=-1)
    put("alpha", "alpha_120x80.png", Image.fromarray(rgba, "RGBA"), optimize=True)
    put("gray", "gray_160x100.png", Image.fromarray(_structured(100, 160, "gray")[..., 1]), optimize=True)
    pal = Image.fromarray(_structured(48, 64, "palette")).quantize(colors=32, dither=Image.Dither.NONE)
    put("palette", "palette_64x48.png", pal, optimize=True)
    put("photo", "photo_192x144.jpg", Image.fromarray(_photo_like(144, 192)), quality=90)
    a16 = _structured(30, 40, "rgb16").astype(np.uint16) * 257 + (np.arange(40, dtype=np.uint16) * 3)[None, :, None]
    p16 = os.path.join(IMAGES, "rgb16_40x30.png")
    write_png16_rgb(p16, a16)
    files["rgb16"] = p16
    # 16-bit gray (Pillow: mode I, clipped to 255 by convert("RGB"); we keep the high byte):
    # v = x * 4099 + y * 37, decoded by the C++ test as (v >> 8).
    g16 = (np.arange(16, dtype=np.uint32)[None, :] * 4099 + np.arange(8, dtype=np.uint32)[:, None] * 37).astype(">u2")
    write_png_raw(os.path.join(IMAGES, "gray16_16x8.png"), 16, 8, 16, 0,
                  zlib.compress(b"".join(b"\x00" + g16[y].tobytes() for y in range(8)), 9))
    # Bad input: a 1x1 RGB PNG whose IDAT inflates to 8 MiB (the image needs 4 bytes).
    write_png_raw(os.path.join(IMAGES, "bad_zlib_bomb_1x1.png"), 1, 1, 8, 2, zlib.compress(bytes(8 << 20), 9))
    # PIL's own decode of the JPEG, stored losslessly: the C++ test resizes these pixels to prove
    # the resampler exact independently of the JPEG decoder, and measures stb vs libjpeg-turbo.
    Image.open(files["photo"]).convert("RGB").save(os.path.join(IMAGES, "photo_192x144.pil_decoded.png"), optimize=True)
    files["photo_pil"] = os.path.join(IMAGES, "photo_192x144.pil_decoded.png")
    with open(os.path.join(IMAGES, "preprocessor_config.clip336.json"), "w") as f:
        json.dump(CLIP336_CONFIG, f, indent=2)
        f.write("\n")
    return files


# --- recipes ----------------------------------------------------------------------------------

NOISE_CASES = {  # generated on both sides; (h, w)
    "noise_640x480": (480, 640),
    "noise_97x61": (61, 97),
    "noise_1000x40": (40, 1000),
    "noise_37x900": (900, 37),
}


def _processor():
    return CLIPImageProcessor.from_dict(dict(CLIP336_CONFIG))


def _reference(proc, pil_rgb, mode):
    """(padded or not) -> (PIL resized uint8 HWC, pixel_values [3,336,336] float32), cross-checked."""
    img = pil_rgb
    if mode == "pad":
        img = expand2square(img, tuple(int(x * 255) for x in proc.image_mean))
    pv = proc.preprocess(img, return_tensors="pt")["pixel_values"][0].numpy()
    arr = np.array(img)
    h, w = get_resize_output_image_size(arr, size=proc.size["shortest_edge"], default_to_square=False)
    resized = np.array(img.resize((w, h), resample=Image.BICUBIC))
    # Cross-check: the processor's own steps from this uint8 image give the same pixel_values.
    top, left = (h - 336) // 2, (w - 336) // 2
    crop = resized[top:top + 336, left:left + 336]
    v = (crop * proc.rescale_factor).astype(np.float32)
    v = (v - np.array(proc.image_mean, dtype=np.float32)) / np.array(proc.image_std, dtype=np.float32)
    assert np.array_equal(v.transpose(2, 0, 1), pv), "reference cross-check failed"
    return np.array(img), resized, pv


def golden_image_clip():
    files = make_inputs()
    proc = _processor()
    out = {}
    cases = {}
    for case, path in files.items():
        cases[case] = Image.open(path).convert("RGB")  # as AlignGPT's loaders
    for case, (h, w) in NOISE_CASES.items():
        cases[case] = Image.fromarray(noise_u8("image." + case, h, w))
    for case, pil in cases.items():
        out[f"{case}.decoded_bandhash"] = fnv_bands(np.array(pil))
        for mode in ("pad", "square"):
            padded, resized, pv = _reference(proc, pil, mode)
            k = f"{case}.{mode}"
            out[k + ".resized_shape"] = torch.tensor(resized.shape[:2], dtype=torch.int64)
            out[k + ".resized_bandhash"] = fnv_bands(resized)
            out[k + ".pv_hash"] = fnv_bands(pv.reshape(1, -1))
            if mode == "pad":
                out[k + ".padded_bandhash"] = fnv_bands(padded)
    # rescale + normalise table: every byte value in each channel, no resize/crop.
    vals = np.arange(256, dtype=np.uint8).reshape(16, 16)
    table_img = Image.fromarray(np.stack([vals, vals[::-1], vals.T], axis=-1))
    proc_nr = CLIPImageProcessor.from_dict(dict(CLIP336_CONFIG, do_resize=False, do_center_crop=False))
    out["table.pixel_values"] = proc_nr.preprocess(table_img, return_tensors="pt")["pixel_values"][0]
    out["table.image"] = torch.from_numpy(np.array(table_img).copy())
    # stb vs PIL on the JPEG is measured by the C++ test (it has both decodes).
    return save("image_clip", out)


RESAMPLE_CASES = [  # (noise name, in h, in w, out h, out w, PIL filter)
    ("rs_a", 61, 97, 150, 40, Image.BICUBIC),    # shrink x, stretch y
    ("rs_b", 200, 300, 67, 111, Image.BICUBIC),  # shrink both, odd factors
    ("rs_c", 33, 45, 33, 200, Image.BICUBIC),    # horizontal pass only
    ("rs_d", 45, 33, 201, 33, Image.BICUBIC),    # vertical pass only
    ("rs_e", 123, 77, 50, 91, Image.BILINEAR),
    ("rs_f", 123, 77, 50, 91, Image.BOX),
    ("rs_g", 123, 77, 50, 91, Image.HAMMING),
    ("rs_h", 123, 77, 50, 91, Image.LANCZOS),
    ("rs_i", 123, 77, 301, 170, Image.LANCZOS),
    ("rs_j", 1, 1, 7, 5, Image.BICUBIC),         # a single pixel stretched
    ("rs_k", 5, 3, 1, 1, Image.BICUBIC),         # down to a single pixel
]


def golden_image_resample():
    out = {}
    for name, ih, iw, oh, ow, f in RESAMPLE_CASES:
        src = Image.fromarray(noise_u8("image." + name, ih, iw))
        r = np.array(src.resize((ow, oh), resample=f))
        out[name + ".bandhash"] = fnv_bands(r)
        out[name + ".spec"] = torch.tensor([ih, iw, oh, ow, int(f)], dtype=torch.int64)
        if r.size <= 4000:
            out[name + ".pixels"] = torch.from_numpy(r.copy())
    return save("image_resample", out)
