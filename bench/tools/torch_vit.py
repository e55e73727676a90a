#!/usr/bin/python3
"""PyTorch side of bench/bench_vit.cpp: CLIP ViT-L/14-336 vision forward, fp32, one image.

transformers 4.31 CLIPVisionModel with the ViT-L/14-336 config (hidden 1024, MLP 4096, 16 heads,
patch 14, image 336: 577 tokens), random init, torch.no_grad. The encoder is built with
--layers layers (23 by default: AlignGPT's mm_vision_select_layer = -2 needs hidden_states[23] of
24, so the last layer is never run; last_hidden_state of a 23-layer encoder is that tensor).

Variants (each timed --reps times after one warm-up; medians printed):
  blas    nn.Linear through libblas (Debian: OpenBLAS; set OPENBLAS_CORETYPE=SKYLAKEX on CPUs
          OpenBLAS 0.3.21 does not know, docs/benchmarks.md)
  onednn  the same module after torch.utils.mkldnn.to_mkldnn (nn.Linear -> MkldnnLinear, oneDNN)

Threads: torch.set_num_threads(--threads); the caller also sets OMP_NUM_THREADS and
OPENBLAS_NUM_THREADS (torch.set_num_threads does not size OpenBLAS's pool).

Output, one line per variant, then the best (parsed by bench_vit):
  torch_vit variant=blas threads=2 layers=23 median_s=4.07 runs=4.1,4.0,...
  torch_vit best=onednn median_s=3.31
Exit status 2 if torch or transformers cannot be imported (the message says which).
"""
import argparse
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=23)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variants", default="blas,onednn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="2-layer width-64 model (a quick check of the script)")
    a = ap.parse_args()

    try:
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModel
    except Exception as e:  # noqa: BLE001 - report any import failure and let the caller go on
        print(f"torch_vit unavailable: {type(e).__name__}: {e}", flush=True)
        return 2

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.tiny:
        cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                               image_size=56, patch_size=14, hidden_act="quick_gelu")
    else:
        cfg = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=a.layers,
                               num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                               hidden_act="quick_gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModel(cfg).eval()
    pixels = torch.randn(1, 3, cfg.image_size, cfg.image_size)

    best = None
    for variant in a.variants.split(","):
        if variant == "blas":
            m = model
        elif variant == "onednn":
            if not torch.backends.mkldnn.is_available():
                print("torch_vit variant=onednn unavailable: torch.backends.mkldnn.is_available() is False", flush=True)
                continue
            import copy
            from torch.utils import mkldnn as mkldnn_utils
            m = mkldnn_utils.to_mkldnn(copy.deepcopy(model))
        else:
            print(f"torch_vit variant={variant} unknown", flush=True)
            continue
        times = []
        with torch.no_grad():
            try:
                m(pixel_values=pixels)  # warm-up (allocator, oneDNN primitive cache)
            except Exception as e:  # noqa: BLE001
                print(f"torch_vit variant={variant} failed: {type(e).__name__}: {e}", flush=True)
                continue
            for _ in range(a.reps):
                t0 = time.perf_counter()
                out = m(pixel_values=pixels).last_hidden_state
                times.append(time.perf_counter() - t0)
        assert tuple(out.shape) == (1, (cfg.image_size // cfg.patch_size) ** 2 + 1, cfg.hidden_size), out.shape
        med = statistics.median(times)
        print(f"torch_vit variant={variant} threads={torch.get_num_threads()} layers={cfg.num_hidden_layers} "
              f"median_s={med:.4f} runs={','.join(f'{t:.3f}' for t in times)}", flush=True)
        if best is None or med < best[1]:
            best = (variant, med)
        del m
    if best is None:
        print("torch_vit unavailable: no variant ran", flush=True)
        return 2
    print(f"torch_vit best={best[0]} median_s={best[1]:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
