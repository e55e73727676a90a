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
#include "aligngpt/ops/exp.h"

namespace aligngpt::ops {

template <class T>
void softmax_forward(const backend::cpu&, T* p, const T* x, index_t N, index_t C) {
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++) {
        const T* x_n = x + n * C;
        T* p_n = p + n * C;
        T m = x_n[0];
        for (index_t i = 1; i < C; i++) m = x_n[i] > m ? x_n[i] : m;
        exp_shifted(p_n, x_n, m, C);  // ops/exp.h: the same bits as exp_of(x - m), vectorised
        T s = 0;
        for (index_t i = 0; i < C; i++) s += p_n[i];
        for (index_t i = 0; i < C; i++) p_n[i] /= s;
    }
}

template <class T>
void softmax_backward(const backend::cpu&, T* dx, const T* dy, const T* p, index_t N, index_t C) {
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++) {
        T dot = 0;  // sum_j dy_nj p_nj
        for (index_t j = 0; j < C; j++) dot += dy[n * C + j] * p[n * C + j];
        for (index_t i = 0; i < C; i++) dx[n * C + i] += p[n * C + i] * (dy[n * C + i] - dot);
    }
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
        const Backend& be = out.value.backend();
        softmax_backward(be, x.get()->grad_buffer().data(), out.grad.data(), out.value.data(), N, C);
    });
}

}  // namespace aligngpt::ag
