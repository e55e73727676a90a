#pragma once
// Row-wise L2 normalisation, as CLIP normalises its image and text embeddings before the cosine
// (HF: x / x.norm(p=2, dim=-1, keepdim=True)).
//
//   y_n = x_n / ||x_n||,  ||x|| = sqrt(sum_i x_i^2)                 norm (N) saved for backward
//   dx_n += (dy_n - y_n (y_n . dy_n)) / ||x_n||                     (the Jacobian of x / ||x||)
//
// Shapes: x, y, dx, dy (N, C)   norm (N). Each row is one thread's; sums run i ascending.
#include <cmath>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/ieee.h"

namespace aligngpt::ops {

// Work items (ops::item): one thread's share, written once for the CPU kernels below and for
// backend::cuda (backend/cuda/exact.h), which launches one thread per row.
namespace item {
template <class T>
ALIGNGPT_HD inline void l2_normalize_forward_row(index_t n, T* y, T* norm, const T* x, index_t C) {
    T ss = 0;
    for (index_t i = 0; i < C; i++) ss += x[n * C + i] * x[n * C + i];
    const T r = sqrt_ieee(ss);
    for (index_t i = 0; i < C; i++) y[n * C + i] = x[n * C + i] / r;
    norm[n] = r;
}
template <class T>
ALIGNGPT_HD inline void l2_normalize_backward_row(index_t n, T* dx, const T* dy, const T* y, const T* norm, index_t C) {
    T dot = 0;
    for (index_t i = 0; i < C; i++) dot += y[n * C + i] * dy[n * C + i];
    for (index_t i = 0; i < C; i++) dx[n * C + i] += (dy[n * C + i] - y[n * C + i] * dot) / norm[n];
}
}  // namespace item

template <class T>
void l2_normalize_forward(const backend::cpu&, T* y, T* norm, const T* x, index_t N, index_t C) {
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++) item::l2_normalize_forward_row(n, y, norm, x, C);
}

template <class T>
void l2_normalize_backward(const backend::cpu&, T* dx, const T* dy, const T* y, const T* norm, index_t N, index_t C) {
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++) item::l2_normalize_backward_row(n, dx, dy, y, norm, C);
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// Each row of x [..., C] divided by its L2 norm.
template <class T, class Backend>
autograd::variable<T, Backend> l2_normalize(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    ALIGNGPT_CHECK(x.value().dim() >= 1 && x.shape().back() > 0, "l2_normalize: input ", detail::shape_str(x.shape()),
                   " has an empty last dimension");
    const Backend& be = x.backend();
    const index_t C = x.shape().back(), N = x.value().numel() / C;
    tensor<T, Backend> y(x.shape(), be), norm(shape_t{N}, be);
    l2_normalize_forward(be, y.data(), norm.data(), x.value().data(), N, C);
    return autograd::tape<T, Backend>::record(tp, "l2_normalize", y, {x}, [x, norm, N, C](autograd::node<T, Backend>& out) {
        l2_normalize_backward(out.value.backend(), x.get()->grad_buffer().data(), out.grad.data(), out.value.data(), norm.data(),
                              N, C);
    });
}

}  // namespace aligngpt::ag
