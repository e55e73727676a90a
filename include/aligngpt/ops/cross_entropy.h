#pragma once
// Cross-entropy over logits with integer targets (torch.nn.functional.cross_entropy, reduction
// 'mean', ignore_index -100), the causal-LM loss of docs/model.md §9.1.
//
//   counted rows  K = { n : target_n != ignore_index },  |K| = count
//   lse_n  = m_n + log sum_v exp(z_nv - m_n),  m_n = max_v z_nv     (max, then sum, left to right)
//   L      = (1/count) sum_{n in K} (lse_n - z_n,target_n)          (n in increasing order)
//
// Backward, with p_nv = exp(z_nv - lse_n) = softmax(z_n)_v:
//   dz_nv += dL * (p_nv - [v = target_n]) / count     for n in K;  nothing for ignored rows
//
// Deliberate difference from PyTorch: if no row is counted (count = 0), torch returns 0/0 = NaN.
// We return L = 0 and a zero gradient: a micro-batch without targets contributes nothing instead
// of poisoning the step with NaN.
// A target outside [0, V) that is not ignore_index throws aligngpt::error naming the op, the
// position and the value (torch raises too, or reads out of bounds on some devices).
//
// Shapes: logits, dlogits (N, V)   targets (N) int64   lse (N, saved for backward)
// Reproducibility: rows reduced left to right by one thread each; the mean sums rows in order n.
// exp and log are ops/exp.h's and ops/log.h's (float: ours, no C library in the bits).
#include <cmath>
#include <cstdint>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/config.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/log.h"

namespace aligngpt::ops {

/// Number of counted rows; throws on a target outside [0, V) that is not ignore_index.
inline index_t cross_entropy_count(const std::int64_t* targets, index_t N, index_t V, std::int64_t ignore_index) {
    index_t count = 0;
    for (index_t n = 0; n < N; n++) {
        if (targets[n] == ignore_index) continue;
        ALIGNGPT_CHECK(targets[n] >= 0 && targets[n] < V, "cross_entropy: target ", targets[n], " at position ", n,
                       " is outside [0, ", V, ") and is not ignore_index ", ignore_index);
        count++;
    }
    return count;
}

// Work items (ops::item): one thread's share, written once for the CPU kernels below and for
// backend::cuda (backend/cuda/exact.h).
namespace item {
/// Row n: lse_n = m + log sum_v exp(z_nv - m) (0 on an ignored row).
template <class T>
ALIGNGPT_HD inline void cross_entropy_row(index_t n, T* lse, const T* z, const std::int64_t* targets, index_t V,
                                          std::int64_t ignore_index) {
    lse[n] = 0;
    if (targets[n] == ignore_index) return;
    const T* z_n = z + n * V;
    T m = z_n[0];
    for (index_t v = 1; v < V; v++) m = z_n[v] > m ? z_n[v] : m;
    T s = 0;
    for (index_t v = 0; v < V; v++) s += exp_of(T(z_n[v] - m));
    lse[n] = m + log_of(s);
}
/// The single item: the mean loss over the counted rows, n ascending (no counted row: 0, where
/// torch gives NaN; documented above).
template <class T>
ALIGNGPT_HD inline void cross_entropy_loss(T* loss, const T* lse, const T* z, const std::int64_t* targets, index_t N, index_t V,
                                           std::int64_t ignore_index, index_t count) {
    T sum = 0;
    for (index_t n = 0; n < N; n++)
        if (targets[n] != ignore_index) sum += lse[n] - z[n * V + targets[n]];
    *loss = count == 0 ? T(0) : sum / T(count);
}
/// Item (n, v) of dz; scale = dloss / (counted rows), the same division on every side.
template <class T>
ALIGNGPT_HD inline void cross_entropy_grad(index_t n, index_t v, T* dz, T scale, const T* z, const T* lse,
                                           const std::int64_t* targets, index_t V, std::int64_t ignore_index) {
    if (targets[n] == ignore_index) return;
    const index_t e = n * V + v;
    const T p = exp_of(T(z[e] - lse[n]));
    dz[e] += scale * (p - (v == targets[n] ? T(1) : T(0)));
}
}  // namespace item

/// Writes the mean loss L to *loss and lse (N) for the backward (0 on ignored rows).
template <class T>
void cross_entropy_forward(const backend::cpu&, T* loss, T* lse, const T* z, const std::int64_t* targets, index_t N, index_t V,
                           std::int64_t ignore_index = -100) {
    const index_t count = cross_entropy_count(targets, N, V, ignore_index);
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++) item::cross_entropy_row(n, lse, z, targets, V, ignore_index);
    item::cross_entropy_loss(loss, lse, z, targets, N, V, ignore_index, count);
}

template <class T>
void cross_entropy_backward(const backend::cpu&, T* dz, const T* dloss, const T* z, const T* lse, const std::int64_t* targets,
                            index_t N, index_t V, std::int64_t ignore_index = -100) {
    const index_t count = cross_entropy_count(targets, N, V, ignore_index);
    if (count == 0) return;
    const T scale = *dloss / T(count);
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++)
        for (index_t v = 0; v < V; v++) item::cross_entropy_grad(n, v, dz, scale, z, lse, targets, V, ignore_index);
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// Mean cross-entropy of logits [..., V] against targets with one id per row; a 0-d scalar.
template <class T, class Backend>
autograd::variable<T, Backend> cross_entropy(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& logits,
                                             const tensor<std::int64_t>& targets, std::int64_t ignore_index = -100) {
    const Backend& be = logits.backend();
    const index_t V = logits.value().dim() >= 1 ? logits.shape().back() : 0;
    const index_t N = V ? logits.value().numel() / V : 0;
    ALIGNGPT_CHECK(V > 0 && targets.numel() == N, "cross_entropy: logits ", detail::shape_str(logits.shape()),
                   " do not match targets ", detail::shape_str(targets.shape()));
    const tensor<std::int64_t> tc = targets.contiguous();  // ids stay on the host: the kernel reads them
    tensor<T, Backend> lse(shape_t{N}, be), loss(shape_t{}, be);
    cross_entropy_forward(be, loss.data(), lse.data(), logits.value().data(), tc.data(), N, V, ignore_index);
    return autograd::tape<T, Backend>::record(
        tp, "cross_entropy", loss, {logits}, [logits, tc, lse, N, V, ignore_index](autograd::node<T, Backend>& out) {
            const Backend& bk = out.value.backend();
            cross_entropy_backward(bk, logits.get()->grad_buffer().data(), out.grad.data(), logits.value().data(), lse.data(),
                                   tc.data(), N, V, ignore_index);
        });
}

template <class T, class Backend>
autograd::variable<T, Backend> cross_entropy(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& logits,
                                             const std::vector<std::int64_t>& targets, std::int64_t ignore_index = -100) {
    return cross_entropy(tp, logits, tensor<std::int64_t>::from(targets, {index_t(targets.size())}), ignore_index);
}

}  // namespace aligngpt::ag
