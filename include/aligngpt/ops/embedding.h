#pragma once
// Embedding lookup (torch.nn.Embedding) and its deterministic scatter-add backward.
//
//   y[t, :] = W[ids[t], :]                                       forward: a row copy per token
//   dW[v, :] += sum over t with ids[t] = v, in increasing t, of dy[t, :]      (v != padding_idx)
//
// padding_idx (LLaMA: 0, docs/model.md §8.3) is looked up like any row, but its gradient is never written,
// exactly as nn.Embedding(padding_idx=0); -1 means none. The same pair of kernels, with
// padding_idx = -1, is the row gather of shape.h (index_rows, used to splice image tokens).
//
// Reproducibility: a scatter-add where two tokens hit the same row is the classic source of
// nondeterminism (atomics in CUDA, racing threads on CPU). Here the token positions are first
// grouped by id with a stable sort (serial, so the order inside a group is increasing t); then
// threads own whole groups = whole vocabulary rows, and each row adds its tokens in order.
// The bits equal the serial loop "for t: dW[ids[t]] += dy[t]" for any thread count.
//
// Shapes: W, dW (V, C)   ids (T)   y, dy (T, C)
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"

namespace aligngpt::ops {

/// Throws aligngpt::error naming `op`, the position and the value of the first id outside [0, V).
inline void check_ids(const char* op, const std::int64_t* ids, index_t T, index_t V) {
    for (index_t t = 0; t < T; t++)
        ALIGNGPT_CHECK(ids[t] >= 0 && ids[t] < V, op, ": id ", ids[t], " at position ", t, " is outside [0, ", V, ")");
}

template <class T>
void embedding_forward(const backend::cpu&, T* y, const T* W, const std::int64_t* ids, index_t Tn, index_t V, index_t C) {
    check_ids("embedding", ids, Tn, V);
    ALIGNGPT_OMP_FOR
    for (index_t t = 0; t < Tn; t++) std::copy(W + ids[t] * C, W + ids[t] * C + C, y + t * C);
}

/// The order in which embedding_backward gathers: `order` holds the token positions stably sorted
/// by id (so each id's tokens in increasing position), `start` the first index in `order` of each
/// id, then Tn. Every backend's kernel uses it, so all add a row's terms in the same order.
inline void embedding_groups(const std::int64_t* ids, index_t Tn, std::vector<index_t>& order, std::vector<index_t>& start) {
    order.resize(static_cast<std::size_t>(Tn));
    std::iota(order.begin(), order.end(), index_t(0));
    std::stable_sort(order.begin(), order.end(), [ids](index_t a, index_t b) { return ids[a] < ids[b]; });
    start.clear();
    for (index_t k = 0; k < Tn; k++)
        if (k == 0 || ids[order[std::size_t(k)]] != ids[order[std::size_t(k - 1)]]) start.push_back(k);
    start.push_back(Tn);
}

template <class T>
void embedding_backward(const backend::cpu&, T* dW, const T* dy, const std::int64_t* ids, index_t Tn, index_t V, index_t C,
                        std::int64_t padding_idx = -1) {
    check_ids("embedding backward", ids, Tn, V);
    std::vector<index_t> order, group_start;
    embedding_groups(ids, Tn, order, group_start);
    const index_t G = index_t(group_start.size()) - 1;
    ALIGNGPT_OMP_FOR
    for (index_t gi = 0; gi < G; gi++) {  // one thread owns row v
        const std::int64_t v = ids[order[group_start[gi]]];
        if (v == padding_idx) continue;
        T* dW_v = dW + v * C;
        for (index_t k = group_start[gi]; k < group_start[gi + 1]; k++)  // tokens in increasing t
            for (index_t c = 0; c < C; c++) dW_v[c] += dy[order[k] * C + c];
    }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// Looks up rows of weight [V, C] for ids of any shape S; the result has shape S + [C].
/// The gradient of row padding_idx stays zero (-1: no padding row).
template <class T, class Backend>
autograd::variable<T, Backend> embedding(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& weight,
                                         const tensor<std::int64_t>& ids, std::int64_t padding_idx = -1) {
    const Backend& be = weight.backend();
    ALIGNGPT_CHECK(weight.value().dim() == 2, "embedding: weight ", detail::shape_str(weight.shape()), " is not 2-d (ids ",
                   detail::shape_str(ids.shape()), ")");
    const index_t V = weight.size(0), C = weight.size(1), Tn = ids.numel();
    const tensor<std::int64_t> idc = ids.contiguous();  // ids stay on the host: the kernel reads them
    shape_t ys = ids.shape();
    ys.push_back(C);
    tensor<T, Backend> y(ys, be);
    embedding_forward(be, y.data(), weight.value().data(), idc.data(), Tn, V, C);
    return autograd::tape<T, Backend>::record(
        tp, "embedding", y, {weight}, [weight, idc, Tn, V, C, padding_idx](autograd::node<T, Backend>& out) {
            const Backend& bk = out.value.backend();
            embedding_backward(bk, weight.get()->grad_buffer().data(), out.grad.data(), idc.data(), Tn, V, C, padding_idx);
        });
}

template <class T, class Backend>
autograd::variable<T, Backend> embedding(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& weight,
                                         const std::vector<std::int64_t>& ids, std::int64_t padding_idx = -1) {
    return embedding(tp, weight, tensor<std::int64_t>::from(ids, {index_t(ids.size())}), padding_idx);
}

}  // namespace aligngpt::ag
