#pragma once
// Sum and mean, over all elements (a 0-d result) or over one dimension d.
//
// With x viewed as (outer, D, inner) around d (outer = D = 1, inner = numel for "all"):
//   sum:   y[o, i] = sum_{j = 0..D-1, in order} x[o, j, i]          dx[o, j, i] += dy[o, i]
//   mean:  y[o, i] = (sum_j x[o, j, i]) / D                         dx[o, j, i] += dy[o, i] / D
// (mean divides the finished sum once, as torch does, rather than summing x / D.)
//
// Shapes: x, dx (outer, D, inner)   y, dy (outer, inner).  Backward accumulates (+=).
// Reproducibility: each output is one left-to-right sum owned by one thread; the reduction over
// all elements is a single output and runs in one thread (never split into per-thread partials).
#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"

namespace aligngpt::ops {

/// y[o, i] = s * sum_j x[o, j, i] (s = 1 for sum, 1/D for mean; the sum is finished first).
// The work item (ops::item), shared with backend::cuda (backend/cuda/exact.h).
namespace item {
/// Item (o, i) = o * inner + i: y[o, i] = s * sum_j x[o, j, i], j ascending.
template <class T>
ALIGNGPT_HD inline void sum_forward(index_t oi, T* y, const T* x, index_t D, index_t inner, bool mean) {
    const index_t o = oi / inner, i = oi % inner;
    T acc = 0;
    for (index_t j = 0; j < D; j++) acc += x[(o * D + j) * inner + i];
    y[oi] = mean ? acc / T(D) : acc;
}
}  // namespace item

template <class T>
void sum_forward(const backend::cpu&, T* y, const T* x, index_t outer, index_t D, index_t inner, bool mean) {
    ALIGNGPT_OMP_FOR
    for (index_t oi = 0; oi < outer * inner; oi++) item::sum_forward(oi, y, x, D, inner, mean);
}

template <class T>
void sum_backward(const backend::cpu&, T* dx, const T* dy, index_t outer, index_t D, index_t inner, bool mean) {
    ALIGNGPT_OMP_FOR_COLLAPSE2
    for (index_t o = 0; o < outer; o++)
        for (index_t j = 0; j < D; j++)
            for (index_t i = 0; i < inner; i++)
                dx[(o * D + j) * inner + i] += mean ? dy[o * inner + i] / T(D) : dy[o * inner + i];
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

namespace reduce_detail {
template <class T, class Backend>
autograd::variable<T, Backend> reduce(autograd::tape<T, Backend>* tp, const char* op, const autograd::variable<T, Backend>& x,
                                      bool all, int d, bool mean) {
    const Backend& be = x.backend();
    const shape_t& s = x.shape();
    index_t outer = 1, D = x.value().numel(), inner = 1;
    shape_t ys;  // 0-d for a full reduction
    if (!all) {
        const int r = x.value().dim();
        ALIGNGPT_CHECK(d >= -r && d < r, op, ": dimension ", d, " out of range for shape ", detail::shape_str(s));
        d = d < 0 ? d + r : d;
        D = s[size_t(d)];
        for (int k = 0; k < d; k++) outer *= s[size_t(k)];
        for (int k = d + 1; k < r; k++) inner *= s[size_t(k)];
        ys = s;
        ys.erase(ys.begin() + d);
    }
    ALIGNGPT_CHECK(!mean || D > 0, op, ": mean over an empty dimension of shape ", detail::shape_str(s));
    tensor<T, Backend> y(ys, be);
    sum_forward(be, y.data(), x.value().data(), outer, D, inner, mean);
    return autograd::tape<T, Backend>::record(tp, op, y, {x}, [x, outer, D, inner, mean](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        sum_backward(bk, x.get()->grad_buffer().data(), out.grad.data(), outer, D, inner, mean);
    });
}
}  // namespace reduce_detail

/// Sum of all elements (0-d).
template <class T, class Backend>
autograd::variable<T, Backend> sum(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    return reduce_detail::reduce(tp, "sum", x, true, 0, false);
}
/// Sum over dimension d (removed from the shape).
template <class T, class Backend>
autograd::variable<T, Backend> sum(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x, int d) {
    return reduce_detail::reduce(tp, "sum", x, false, d, false);
}
/// Mean of all elements (0-d).
template <class T, class Backend>
autograd::variable<T, Backend> mean(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    return reduce_detail::reduce(tp, "mean", x, true, 0, true);
}
/// Mean over dimension d (removed from the shape).
template <class T, class Backend>
autograd::variable<T, Backend> mean(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x, int d) {
    return reduce_detail::reduce(tp, "mean", x, false, d, true);
}

}  // namespace aligngpt::ag
