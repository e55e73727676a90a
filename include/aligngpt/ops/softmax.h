#pragma once
// Softmax over the last dimension (torch.softmax(x, dim=-1)), with the row max subtracted.
//
//   m_n   = max_i x_ni                 s_n = sum_i exp(x_ni - m_n)          (both left to right)
//   p_ni  = exp(x_ni - m_n) / s_n
//
// Backward: dp_nj/dx_ni = p_nj (delta_ij - p_ni), so
//   dx_ni = sum_j dy_nj p_nj (delta_ij - p_ni) = p_ni ( dy_ni - sum_j dy_nj p_nj )
// It reads the output p (the node keeps y, not x).
//
// Shapes (row-major): x, p, dx, dy (N, C). Backward accumulates (+=) into dx.
// Reproducibility: each row is reduced left to right by one thread; threads split rows.
#include <cmath>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/isa.h"
#include "aligngpt/ops/exp.h"

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/softmax.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

template <class T>
void softmax_forward(const backend::cpu& be, T* p, const T* x, index_t N, index_t C) {
    ALIGNGPT_ISA_DISPATCH(softmax_forward<T>, be, p, x, N, C)
}

template <class T>
void softmax_backward(const backend::cpu& be, T* dx, const T* dy, const T* p, index_t N, index_t C) {
    ALIGNGPT_ISA_DISPATCH(softmax_backward<T>, be, dx, dy, p, N, C)
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// softmax over the last dimension of x (any leading dimensions).
template <class T, class Backend>
autograd::variable<T, Backend> softmax(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    const Backend& be = x.backend();
    ALIGNGPT_CHECK(x.value().dim() >= 1 && x.shape().back() > 0, "softmax: input ", detail::shape_str(x.shape()),
                   " has an empty last dimension");
    const index_t C = x.shape().back(), N = x.value().numel() / C;
    tensor<T, Backend> p(x.shape(), be);
    softmax_forward(be, p.data(), x.value().data(), N, C);
    return autograd::tape<T, Backend>::record(tp, "softmax", p, {x}, [x, N, C](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        softmax_backward(bk, x.get()->grad_buffer().data(), out.grad.data(), out.value.data(), N, C);
    });
}

}  // namespace aligngpt::ag
