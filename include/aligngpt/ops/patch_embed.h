#pragma once
// CLIP patch embedding (Dosovitskiy et al. 2021, ViT eq. 1): Conv2d(C -> D, kernel P, stride P, no
// bias), then flatten(2).transpose(1, 2), as CLIPVisionEmbeddings.patch_embedding.
//
//   patch p = row * (W/P) + col          (row-major over the (H/P) x (W/P) grid)
//   cols[b, p, (c, kh, kw)] = pixels[b, c, row*P + kh, col*P + kw]        gather, (c, kh, kw) order
//   out[b, p, d] = sum_{(c,kh,kw)} cols[b, p, .] w[d, c, kh, kw]          one fma chain (gemm.h)
// The weight [D, C, P, P] read row-major is already [D, C*P*P] in (c, kh, kw) order, so the
// convolution is the linear map out = cols w^T.
// Backward (stride == kernel: every pixel is in exactly one patch, so the scatter has no overlap):
//   dw   += dout^T cols              (sum over b, p in order)
//   dcols = dout w,   dpixels[b, c, row*P+kh, col*P+kw] += dcols[b, p, (c, kh, kw)]
//
// Shapes: pixels, dpixels (B, C, H, W)   w, dw (D, C, P, P)   out, dout (B, (H/P)*(W/P), D)
// Threads: the gather/scatter split patches; the products split output rows (gemm.h).
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/ops/gemm.h"

namespace aligngpt::ops {

struct patch_dims {
    index_t B, C, H, W, P, D;
    index_t grid_w() const { return W / P; }
    index_t patches() const { return (H / P) * (W / P); }
    index_t K() const { return C * P * P; }
};

/// cols (B*patches, C*P*P) <- pixels (B, C, H, W)
template <class T>
void patch_gather(T* cols, const T* pixels, const patch_dims& d) {
    const index_t NP = d.patches(), K = d.K(), GW = d.grid_w(), P = d.P;
    ALIGNGPT_OMP_FOR
    for (index_t r = 0; r < d.B * NP; r++) {
        const index_t b = r / NP, row = (r % NP) / GW, col = (r % NP) % GW;
        T* dst = cols + r * K;
        for (index_t c = 0; c < d.C; c++)
            for (index_t kh = 0; kh < P; kh++)
                for (index_t kw = 0; kw < P; kw++) *dst++ = pixels[((b * d.C + c) * d.H + row * P + kh) * d.W + col * P + kw];
    }
}

/// dpixels (B, C, H, W) += dcols (B*patches, C*P*P)
template <class T>
void patch_scatter_add(T* dpixels, const T* dcols, const patch_dims& d) {
    const index_t NP = d.patches(), K = d.K(), GW = d.grid_w(), P = d.P;
    ALIGNGPT_OMP_FOR  // patches do not overlap: no races
        for (index_t r = 0; r < d.B * NP; r++) {
        const index_t b = r / NP, row = (r % NP) / GW, col = (r % NP) % GW;
        const T* src = dcols + r * K;
        for (index_t c = 0; c < d.C; c++)
            for (index_t kh = 0; kh < P; kh++)
                for (index_t kw = 0; kw < P; kw++) dpixels[((b * d.C + c) * d.H + row * P + kh) * d.W + col * P + kw] += *src++;
    }
}

template <class T>
void patch_embed_forward(const backend::cpu& be, T* out, const T* pixels, const T* w, const patch_dims& d) {
    const index_t M = d.B * d.patches(), K = d.K();
    std::vector<T> cols(size_t(M * K));
    patch_gather(cols.data(), pixels, d);
    gemm(be, M, d.D, K, cols.data(), K, 1, w, 1, K, out, d.D);  // out = cols w^T
}

/// Accumulates into dpixels and dw (either may be null).
template <class T>
void patch_embed_backward(const backend::cpu& be, T* dpixels, T* dw, const T* dout, const T* pixels, const T* w,
                          const patch_dims& d) {
    const index_t M = d.B * d.patches(), K = d.K();
    std::vector<T> cols(size_t(M * K));
    if (dw) {
        patch_gather(cols.data(), pixels, d);
        gemm(be, d.D, K, M, dout, 1, d.D, cols.data(), K, 1, dw, K, gemm_init::accumulate);  // dw += dout^T cols
    }
    if (dpixels) {
        gemm(be, M, K, d.D, dout, d.D, 1, w, K, 1, cols.data(), K);  // dcols = dout w
        patch_scatter_add(dpixels, cols.data(), d);
    }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// pixels [B, C, H, W], weight [D, C, P, P] -> [B, (H/P)*(W/P), D]; H and W must be multiples of P.
template <class T, class Backend>
autograd::variable<T, Backend> patch_embed(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& pixels,
                                           const autograd::variable<T, Backend>& weight) {
    const Backend& be = pixels.backend();
    const auto sx = detail::shape_str(pixels.shape()), sw = detail::shape_str(weight.shape());
    ALIGNGPT_CHECK(pixels.value().dim() == 4 && weight.value().dim() == 4 && weight.size(2) == weight.size(3) &&
                       weight.size(2) > 0 && pixels.size(1) == weight.size(1),
                   "patch_embed: pixels ", sx, " [B, C, H, W] do not match weight ", sw, " [D, C, P, P]");
    const ops::patch_dims d{pixels.size(0), pixels.size(1), pixels.size(2), pixels.size(3), weight.size(2), weight.size(0)};
    ALIGNGPT_CHECK(d.H % d.P == 0 && d.W % d.P == 0, "patch_embed: pixels ", sx,
                   " height and width are not multiples of the patch size ", d.P, " (weight ", sw, ")");
    tensor<T, Backend> out({d.B, d.patches(), d.D}, be);
    patch_embed_forward(be, out.data(), pixels.value().data(), weight.value().data(), d);
    return autograd::tape<T, Backend>::record(
        tp, "patch_embed", out, {pixels, weight}, [pixels, weight, d](autograd::node<T, Backend>& n) {
            const Backend& bk = n.value.backend();
            T* dx = pixels.requires_grad() ? pixels.get()->grad_buffer().data() : nullptr;
            T* dw = weight.requires_grad() ? weight.get()->grad_buffer().data() : nullptr;
            patch_embed_backward(bk, dx, dw, n.grad.data(), pixels.value().data(), weight.value().data(), d);
        });
}

}  // namespace aligngpt::ag
