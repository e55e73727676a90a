#pragma once
// Data movement: concat and slice along a dimension, row gather, reshape, transpose of two dims.
// Each backward routes the gradient back by index (the splice of docs/model.md §7.2).
//
// Every op views its input as a 3-d block around the dimension d it works on:
//   [outer, D, inner]   outer = prod of dims before d, inner = prod of dims after d.
//   concat:    y[o, off_k + j, i] = x_k[o, j, i]          dx_k[o, j, i] += dy[o, off_k + j, i]
//   slice:     y[o, j, i]  = x[o, begin + j, i]           dx[o, begin + j, i] += dy[o, j, i]
//   transpose: y[p, j, m, i, q] = x[p, i, m, j, q]        dx = the same copy of dy with a, b swapped
//   index_rows: y[r] = x[rows[r]]                         the gather of embedding.h (deterministic
//              scatter-add of dy rows; duplicates add in increasing r)
//   reshape:   y = x (same elements, new shape; a view)   dx += dy
//
// Backward accumulates (+=); a frozen input gets no gradient.
// Reproducibility: pure copies and adds; each output element is written by one thread.
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/embedding.h"

namespace aligngpt::ops {

/// y[o, y_off + j, :] (op)= x[o, x_off + j, :] for j < Dn, with y (outer, Dy, inner) and
/// x (outer, Dx, inner): the one copy that concat and slice, forward and backward, are made of.
/// (op) is = or, with accumulate, +=.
template <class T>
void copy_block(const backend::cpu&, T* y, index_t Dy, index_t y_off, const T* x, index_t Dx, index_t x_off, index_t Dn,
                index_t outer, index_t inner, bool accumulate) {
    ALIGNGPT_OMP_FOR
    for (index_t o = 0; o < outer; o++)
        for (index_t j = 0; j < Dn; j++) {
            T* dst = y + (o * Dy + y_off + j) * inner;
            const T* src = x + (o * Dx + x_off + j) * inner;
            for (index_t i = 0; i < inner; i++) dst[i] = accumulate ? dst[i] + src[i] : src[i];
        }
}

/// y[p, j, m, i, q] (op)= x[p, i, m, j, q];  x (P, A, M, Bn, Q), y (P, Bn, M, A, Q).
template <class T>
void transpose_copy(const backend::cpu&, T* y, const T* x, index_t P, index_t A, index_t M, index_t Bn, index_t Q,
                    bool accumulate) {
    ALIGNGPT_OMP_FOR_COLLAPSE2
    for (index_t p = 0; p < P; p++)
        for (index_t j = 0; j < Bn; j++)
            for (index_t m = 0; m < M; m++)
                for (index_t i = 0; i < A; i++) {
                    T* dst = y + (((p * Bn + j) * M + m) * A + i) * Q;
                    const T* src = x + (((p * A + i) * M + m) * Bn + j) * Q;
                    for (index_t q = 0; q < Q; q++) dst[q] = accumulate ? dst[q] + src[q] : src[q];
                }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

namespace shape_detail {
inline int norm_dim(const char* op, int d, const shape_t& s) {
    const int r = int(s.size());
    ALIGNGPT_CHECK(d >= -r && d < r, op, ": dimension ", d, " out of range for shape ", detail::shape_str(s));
    return d < 0 ? d + r : d;
}
inline index_t prod(const shape_t& s, int from, int to) {
    index_t p = 1;
    for (int k = from; k < to; k++) p *= s[size_t(k)];
    return p;
}
}  // namespace shape_detail

/// Concatenation along dim d; all inputs agree on every other dimension.
template <class T, class Backend>
autograd::variable<T, Backend> concat(autograd::tape<T, Backend>* tp, const std::vector<autograd::variable<T, Backend>>& xs,
                                      int d) {
    const Backend& be = xs.at(0).backend();
    ALIGNGPT_CHECK(!xs.empty(), "concat: no inputs");
    const shape_t& s0 = xs[0].shape();
    d = shape_detail::norm_dim("concat", d, s0);
    shape_t ys = s0;
    ys[size_t(d)] = 0;
    for (const auto& x : xs) {
        bool same = x.shape().size() == s0.size();
        for (size_t k = 0; same && k < s0.size(); k++) same = int(k) == d || x.shape()[k] == s0[k];
        ALIGNGPT_CHECK(same, "concat: input ", detail::shape_str(x.shape()), " does not match input ", detail::shape_str(s0),
                       " outside dimension ", d);
        ys[size_t(d)] += x.size(d);
    }
    const index_t outer = shape_detail::prod(s0, 0, d), inner = shape_detail::prod(s0, d + 1, int(s0.size()));
    const index_t Dy = ys[size_t(d)];
    tensor<T, Backend> y(ys, be);
    index_t off = 0;
    for (const auto& x : xs) {
        copy_block(be, y.data(), Dy, off, x.value().data(), x.size(d), 0, x.size(d), outer, inner, false);
        off += x.size(d);
    }
    return autograd::tape<T, Backend>::record(tp, "concat", y, xs, [xs, d, Dy, outer, inner](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        index_t at = 0;
        for (const auto& x : xs) {
            if (x.requires_grad())  // dx[o, j, i] += dy[o, at + j, i]
                copy_block(bk, x.get()->grad_buffer().data(), x.size(d), 0, out.grad.data(), Dy, at, x.size(d), outer, inner,
                           true);
            at += x.size(d);
        }
    });
}

/// x[..., begin:end, ...] along dim d, as a contiguous copy.
template <class T, class Backend>
autograd::variable<T, Backend> slice(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x, int d,
                                     index_t begin, index_t end) {
    const Backend& be = x.backend();
    d = shape_detail::norm_dim("slice", d, x.shape());
    const index_t D = x.size(d);
    ALIGNGPT_CHECK(0 <= begin && begin <= end && end <= D, "slice: range [", begin, ",", end, ") out of bounds for dimension ", d,
                   " of shape ", detail::shape_str(x.shape()));
    const index_t outer = shape_detail::prod(x.shape(), 0, d);
    const index_t inner = shape_detail::prod(x.shape(), d + 1, x.value().dim()), Dn = end - begin;
    shape_t ys = x.shape();
    ys[size_t(d)] = Dn;
    tensor<T, Backend> y(ys, be);
    copy_block(be, y.data(), Dn, 0, x.value().data(), D, begin, Dn, outer, inner, false);
    return autograd::tape<T, Backend>::record(
        tp, "slice", y, {x}, [x, D, begin, Dn, outer, inner](autograd::node<T, Backend>& out) {
            const Backend& bk = out.value.backend();
            copy_block(bk, x.get()->grad_buffer().data(), D, begin, out.grad.data(), Dn, 0, Dn, outer, inner, true);
        });
}

/// Rows of x [R, ...] picked by `rows` (any may repeat): result [rows.size(), ...].
template <class T, class Backend>
autograd::variable<T, Backend> index_rows(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x,
                                          const std::vector<std::int64_t>& rows) {
    const Backend& be = x.backend();
    ALIGNGPT_CHECK(x.value().dim() >= 1, "index_rows: input ", detail::shape_str(x.shape()), " is 0-d");
    const index_t R = x.size(0), C = R ? x.value().numel() / R : 0, Nr = index_t(rows.size());
    for (index_t r = 0; r < Nr; r++)
        ALIGNGPT_CHECK(rows[size_t(r)] >= 0 && rows[size_t(r)] < R, "index_rows: row ", rows[size_t(r)], " at position ", r,
                       " is outside [0, ", R, ") for input ", detail::shape_str(x.shape()));
    shape_t ys = x.shape();
    ys[0] = Nr;
    tensor<T, Backend> y(ys, be);
    embedding_forward(be, y.data(), x.value().data(), rows.data(), Nr, R, C);
    return autograd::tape<T, Backend>::record(tp, "index_rows", y, {x}, [x, rows, Nr, R, C](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        embedding_backward(bk, x.get()->grad_buffer().data(), out.grad.data(), rows.data(), Nr, R, C, -1);
    });
}

/// The same elements with a new shape (one dimension may be -1). The value is a view of x's
/// storage: recorded values are never written in place.
template <class T, class Backend>
autograd::variable<T, Backend> reshape(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x, shape_t s) {
    tensor<T, Backend> y = x.value().reshape(std::move(s));
    const index_t n = y.numel();
    return autograd::tape<T, Backend>::record(tp, "reshape", y, {x}, [x, n](autograd::node<T, Backend>& out) {
        out.value.backend().accumulate(x.get()->grad_buffer().data(), out.grad.data(), n);
    });
}

/// x with dimensions a and b exchanged, as a contiguous copy.
template <class T, class Backend>
autograd::variable<T, Backend> transpose(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x, int a, int b) {
    const Backend& be = x.backend();
    a = shape_detail::norm_dim("transpose", a, x.shape());
    b = shape_detail::norm_dim("transpose", b, x.shape());
    if (a > b) std::swap(a, b);
    const shape_t& s = x.shape();
    index_t P = shape_detail::prod(s, 0, a), A = s[size_t(a)], M = shape_detail::prod(s, a + 1, b);
    index_t Bn = s[size_t(b)], Q = shape_detail::prod(s, b + 1, int(s.size()));
    if (a == b) P = A = M = Bn = 1, Q = x.value().numel();  // nothing to exchange: a plain copy
    shape_t ys = s;
    std::swap(ys[size_t(a)], ys[size_t(b)]);
    tensor<T, Backend> y(ys, be);
    transpose_copy(be, y.data(), x.value().data(), P, A, M, Bn, Q, false);
    return autograd::tape<T, Backend>::record(tp, "transpose", y, {x}, [x, P, A, M, Bn, Q](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        transpose_copy(bk, x.get()->grad_buffer().data(), out.grad.data(), P, Bn, M, A, Q, true);
    });
}

}  // namespace aligngpt::ag
