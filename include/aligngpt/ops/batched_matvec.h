#pragma once
// Batched matrix-vector product: one matrix and one vector per batch row. AlignGPT's gate uses it
// for the dot product of every image token with the text mean (models/align.h).
//
//   y_bj   = sum_h M_bjh v_bh                                h ascending, plain multiply-add
//   dM_bjh += dy_bj v_bh
//   dv_bh  += sum_j dy_bj M_bjh                               j ascending
//
// The forward is a sum of products with no fused multiply-add, as torch's (I * a).sum(-1), so it
// matches the reference's rounding term by term. Shapes: M, dM (B, J, H)   v, dv (B, H)   y, dy (B, J).
// Each output element is one thread's.
#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"

namespace aligngpt::ops {

// Work items (ops::item), shared with backend::cuda (backend/cuda/exact.h).
namespace item {
/// Item (b, j): y[b, j] = sum_h M[b, j, h] v[b, h], h ascending.
template <class T>
ALIGNGPT_HD inline void batched_matvec_forward(index_t bj, T* y, const T* M, const T* v, index_t J, index_t H) {
    const index_t b = bj / J;
    T acc = 0;
    for (index_t h = 0; h < H; h++) acc += M[bj * H + h] * v[b * H + h];
    y[bj] = acc;
}
/// Item (b, h) of dv, j ascending from the value already there.
template <class T>
ALIGNGPT_HD inline void batched_matvec_backward_vector(index_t bh, T* dv, const T* dy, const T* M, index_t J, index_t H) {
    const index_t b = bh / H, h = bh % H;
    T acc = dv[bh];
    for (index_t j = 0; j < J; j++) acc += dy[b * J + j] * M[(b * J + j) * H + h];
    dv[bh] = acc;
}
}  // namespace item

template <class T>
void batched_matvec_forward(const backend::cpu&, T* y, const T* M, const T* v, index_t Bn, index_t J, index_t H) {
    ALIGNGPT_OMP_FOR
    for (index_t bj = 0; bj < Bn * J; bj++) item::batched_matvec_forward(bj, y, M, v, J, H);
}

template <class T>
void batched_matvec_backward(const backend::cpu&, T* dM, T* dv, const T* dy, const T* M, const T* v, index_t Bn, index_t J,
                             index_t H) {
    if (dM) {
        ALIGNGPT_OMP_FOR_COLLAPSE2
        for (index_t b = 0; b < Bn; b++)
            for (index_t j = 0; j < J; j++)
                for (index_t h = 0; h < H; h++) dM[(b * J + j) * H + h] += dy[b * J + j] * v[b * H + h];
    }
    if (dv) {
        ALIGNGPT_OMP_FOR
        for (index_t bh = 0; bh < Bn * H; bh++) item::batched_matvec_backward_vector(bh, dv, dy, M, J, H);
    }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// M [B, J, H], v [B, H] -> [B, J].
template <class T, class Backend>
autograd::variable<T, Backend> batched_matvec(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& m,
                                              const autograd::variable<T, Backend>& v) {
    ALIGNGPT_CHECK(m.value().dim() == 3 && v.value().dim() == 2 && m.size(0) == v.size(0) && m.size(2) == v.size(1),
                   "batched_matvec: matrices ", detail::shape_str(m.shape()), " and vectors ", detail::shape_str(v.shape()),
                   " do not match");
    const Backend& be = m.backend();
    const index_t Bn = m.size(0), J = m.size(1), H = m.size(2);
    tensor<T, Backend> y({Bn, J}, be);
    batched_matvec_forward(be, y.data(), m.value().data(), v.value().data(), Bn, J, H);
    return autograd::tape<T, Backend>::record(tp, "batched_matvec", y, {m, v}, [m, v, Bn, J, H](autograd::node<T, Backend>& out) {
        T* dM = m.requires_grad() ? m.get()->grad_buffer().data() : nullptr;
        T* dv = v.requires_grad() ? v.get()->grad_buffer().data() : nullptr;
        batched_matvec_backward(out.value.backend(), dM, dv, out.grad.data(), m.value().data(), v.value().data(), Bn, J, H);
    });
}

}  // namespace aligngpt::ag
