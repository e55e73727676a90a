#pragma once
// LayerNorm (Ba, Kiros & Hinton 2016, "Layer Normalization", eq. 4), as torch.nn.LayerNorm:
// biased variance (divide by C), eps 1e-5 inside the square root (CLIP's pre/post LNs).
//
//   mu_n   = (1/C) sum_i x_ni                                saved: mean (N)
//   var_n  = (1/C) sum_i (x_ni - mu_n)^2                     two passes, left to right
//   r_n    = 1 / sqrt(var_n + eps)                           saved: rstd (N)
//   xhat_ni = (x_ni - mu_n) r_n
//   y_ni   = w_i xhat_ni + b_i
//
// Backward, with gy_ni = w_i dy_ni: since dxhat_nj/dx_ni = r_n (delta_ij - 1/C - xhat_ni xhat_nj / C),
//   dx_ni = r_n ( gy_ni - (1/C) sum_j gy_nj - xhat_ni (1/C) sum_j gy_nj xhat_nj )
//   dw_i  = sum_n dy_ni xhat_ni          db_i = sum_n dy_ni
//
// Shapes (row-major): x, y, dx, dy (N, C)   w, b, dw, db (C)   mean, rstd (N).  b may be null.
// Backward accumulates (+=); dx, dw, db may be null (frozen inputs).
// Reproducibility: reductions left to right in one thread; threads over rows (dx) or channels (dw, db).
#include <cmath>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/isa.h"

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/layer_norm.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

template <class T>
void layer_norm_forward(const backend::cpu& be, T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t N, index_t C,
                        T eps) {
    ALIGNGPT_ISA_DISPATCH(layer_norm_forward<T>, be, y, mean, rstd, x, w, b, N, C, eps)
}

template <class T>
void layer_norm_backward(const backend::cpu& be, T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* mean,
                         const T* rstd, index_t N, index_t C) {
    ALIGNGPT_ISA_DISPATCH(layer_norm_backward<T>, be, dx, dw, db, dy, x, w, mean, rstd, N, C)
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// y = w * (x - mean) / sqrt(var + eps) + b over the last dimension of x. b may be undefined.
template <class T, class Backend>
autograd::variable<T, Backend> layer_norm(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x,
                                          const autograd::variable<T, Backend>& w, const autograd::variable<T, Backend>& b = {},
                                          T eps = T(1e-5)) {
    const Backend& be = x.backend();
    const index_t C = w.value().numel();
    ALIGNGPT_CHECK(w.value().dim() == 1 && x.value().dim() >= 1 && x.shape().back() == C, "layer_norm: input ",
                   detail::shape_str(x.shape()), " does not match weight ", detail::shape_str(w.shape()));
    ALIGNGPT_CHECK(!b.defined() || b.shape() == w.shape(), "layer_norm: bias ",
                   detail::shape_str(b.defined() ? b.shape() : shape_t{}), " does not match weight ",
                   detail::shape_str(w.shape()));
    const index_t N = C ? x.value().numel() / C : 0;
    tensor<T, Backend> y(x.shape(), be), mean(shape_t{N}, be), rstd(shape_t{N}, be);
    layer_norm_forward(be, y.data(), mean.data(), rstd.data(), x.value().data(), w.value().data(),
                       b.defined() ? b.value().data() : nullptr, N, C, eps);
    std::vector<autograd::variable<T, Backend>> in{x, w};
    if (b.defined()) in.push_back(b);
    return autograd::tape<T, Backend>::record(
        tp, "layer_norm", y, in, [x, w, b, mean, rstd, N, C](autograd::node<T, Backend>& out) {
            const Backend& bk = out.value.backend();
            T* dx = x.requires_grad() ? x.get()->grad_buffer().data() : nullptr;
            T* dw = w.requires_grad() ? w.get()->grad_buffer().data() : nullptr;
            T* db = b.defined() && b.requires_grad() ? b.get()->grad_buffer().data() : nullptr;
            layer_norm_backward(bk, dx, dw, db, out.grad.data(), x.value().data(), w.value().data(), mean.data(), rstd.data(), N,
                                C);
        });
}

}  // namespace aligngpt::ag
