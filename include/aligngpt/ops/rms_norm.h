#pragma once
// RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", eq. 4), as in HF LLaMA:
// mean of squares, eps inside the square root, weight multiplied after normalising.
//
//   r_n   = 1 / sqrt( (1/C) * sum_i x_ni^2 + eps )          saved for backward: rstd (N)
//   y_ni  = g_i * (x_ni * r_n)
//
// Backward, with xhat_ni = x_ni r_n and gy_ni = g_i dy_ni:
//   dr_n/dx_ni = -r_n^3 x_ni / C, so
//   dx_ni = r_n gy_ni + sum_j gy_nj x_nj * dr_n/dx_ni
//         = r_n ( gy_ni - xhat_ni * (1/C) sum_j gy_nj xhat_nj )
//   dg_i  = sum_n dy_ni xhat_ni
//
// Shapes (row-major): x, y, dx, dy (N, C)   g, dg (C)   rstd (N)
// Backward accumulates (+=) into dx and dg; either may be null (frozen input).
// Reproducibility: each reduction runs left to right in one thread; threads split only the index
// they write (rows n for y and dx, channels i for dg). No atomics, no omp reduction.
#include <cmath>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/isa.h"

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/rms_norm.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

template <class T>
void rms_norm_forward(const backend::cpu& be, T* y, T* rstd, const T* x, const T* g, index_t N, index_t C, T eps) {
    ALIGNGPT_ISA_DISPATCH(rms_norm_forward<T>, be, y, rstd, x, g, N, C, eps)
}

template <class T>
void rms_norm_backward(const backend::cpu& be, T* dx, T* dg, const T* dy, const T* x, const T* g, const T* rstd, index_t N,
                       index_t C) {
    ALIGNGPT_ISA_DISPATCH(rms_norm_backward<T>, be, dx, dg, dy, x, g, rstd, N, C)
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// y = g * x / rms(x) over the last dimension of x (any leading dimensions).
template <class T, class Backend>
autograd::variable<T, Backend> rms_norm(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x,
                                        const autograd::variable<T, Backend>& g, T eps = T(1e-5)) {
    const Backend& be = x.backend();
    const index_t C = g.value().numel();
    ALIGNGPT_CHECK(g.value().dim() == 1 && x.value().dim() >= 1 && x.shape().back() == C, "rms_norm: input ",
                   detail::shape_str(x.shape()), " does not match weight ", detail::shape_str(g.shape()));
    const index_t N = C ? x.value().numel() / C : 0;
    tensor<T, Backend> y(x.shape(), be), rstd(shape_t{N}, be);
    rms_norm_forward(be, y.data(), rstd.data(), x.value().data(), g.value().data(), N, C, eps);
    return autograd::tape<T, Backend>::record(tp, "rms_norm", y, {x, g}, [x, g, rstd, N, C](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        T* dx = x.requires_grad() ? x.get()->grad_buffer().data() : nullptr;
        T* dg = g.requires_grad() ? g.get()->grad_buffer().data() : nullptr;
        rms_norm_backward(bk, dx, dg, out.grad.data(), x.value().data(), g.value().data(), rstd.data(), N, C);
    });
}

}  // namespace aligngpt::ag
