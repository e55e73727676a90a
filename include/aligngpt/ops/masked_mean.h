#pragma once
// Mean over the rows a mask selects: the text mean that AlignGPT's gate compares with each image
// token (the gate's a_b, see models/align.h).
//
//   n_b    = sum_t m_bt                                  m in {0, 1}
//   y_bh   = (sum_t m_bt x_bth) / (n_b + eps)             t ascending, skipped where m_bt = 0
//   dx_bth += m_bt dy_bh / (n_b + eps)
//
// eps keeps an all-zero mask finite (the reference adds 1e-8 to the count, in the float type).
// Shapes: x, dx (B, T, H)   mask (B*T, host)   y, dy (B, H). Each output row is one thread's.
#include <cstdint>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"

namespace aligngpt::ops {

/// denom[b] = n_b + eps, computed on the host from the host mask (shared by forward and backward).
template <class T>
std::vector<T> masked_mean_denominators(const std::uint8_t* mask, index_t Bn, index_t Tn, T eps) {
    std::vector<T> denom(size_t(Bn), T(0));
    for (index_t b = 0; b < Bn; b++) {
        index_t n = 0;
        for (index_t t = 0; t < Tn; t++) n += mask[b * Tn + t] ? 1 : 0;
        denom[size_t(b)] = T(n) + eps;  // torch: sum(mask.int()).to(dtype) + eps
    }
    return denom;
}

// The work item (ops::item), shared with backend::cuda (backend/cuda/exact.h).
namespace item {
/// Item (b, h): the masked mean over t ascending (denom: n_b + eps, from the host).
template <class T>
ALIGNGPT_HD inline void masked_mean_forward(index_t bh, T* y, const T* x, const std::uint8_t* mask, const T* denom, index_t Tn,
                                            index_t H) {
    const index_t b = bh / H, h = bh % H;
    T acc = 0;
    for (index_t t = 0; t < Tn; t++)
        if (mask[b * Tn + t]) acc += x[(b * Tn + t) * H + h];
    y[bh] = acc / denom[b];
}
}  // namespace item

template <class T>
void masked_mean_forward(const backend::cpu&, T* y, const T* x, const std::uint8_t* mask, const T* denom, index_t Bn, index_t Tn,
                         index_t H) {
    ALIGNGPT_OMP_FOR
    for (index_t bh = 0; bh < Bn * H; bh++) item::masked_mean_forward(bh, y, x, mask, denom, Tn, H);
}

template <class T>
void masked_mean_backward(const backend::cpu&, T* dx, const T* dy, const std::uint8_t* mask, const T* denom, index_t Bn,
                          index_t Tn, index_t H) {
    ALIGNGPT_OMP_FOR
    for (index_t b = 0; b < Bn; b++)
        for (index_t t = 0; t < Tn; t++)
            if (mask[b * Tn + t])
                for (index_t h = 0; h < H; h++) dx[(b * Tn + t) * H + h] += dy[b * H + h] / denom[b];
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// x [B, T, H], mask [B*T] (1 = counted) -> [B, H].
template <class T, class Backend>
autograd::variable<T, Backend> masked_mean(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x,
                                           const std::vector<std::uint8_t>& mask, T eps) {
    ALIGNGPT_CHECK(x.value().dim() == 3, "masked_mean: input ", detail::shape_str(x.shape()), " is not [B, T, H]");
    const Backend& be = x.backend();
    const index_t Bn = x.size(0), Tn = x.size(1), H = x.size(2);
    ALIGNGPT_CHECK(index_t(mask.size()) == Bn * Tn, "masked_mean: mask has ", mask.size(), " entries for [B, T] = [", Bn, ", ",
                   Tn, "]");
    std::vector<T> denom = ops::masked_mean_denominators(mask.data(), Bn, Tn, eps);
    tensor<T, Backend> y({Bn, H}, be);
    masked_mean_forward(be, y.data(), x.value().data(), mask.data(), denom.data(), Bn, Tn, H);
    return autograd::tape<T, Backend>::record(tp, "masked_mean", y, {x},
                                              [x, mask, denom, Bn, Tn, H](autograd::node<T, Backend>& out) {
                                                  masked_mean_backward(out.value.backend(), x.get()->grad_buffer().data(),
                                                                       out.grad.data(), mask.data(), denom.data(), Bn, Tn, H);
                                              });
}

}  // namespace aligngpt::ag
