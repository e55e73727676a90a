#pragma once
// Elementwise arithmetic: residual adds, products, scaling by a constant, adding a broadcast row.
//
//   add:      y = a + b            da += dy           db += dy
//   mul:      y = a * b            da += dy * b       db += dy * a
//   scale:    y = s * x            dx += s * dy                     (s a constant, not a variable)
//   add_row:  y_nc = x_nc + r_c    dx += dy           dr_c += sum_n dy_nc   (n in order)
//
// Shapes: a, b, x, y (n elements; add_row: x, y (N, C), r (C)). Backward accumulates (+=);
// any gradient pointer may be null (frozen input). da and db may be the same buffer (x*x).
// Reproducibility: threads split the elements (or, for dr, the channels) they write.
#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"

namespace aligngpt::ops {

template <class T>
void add_forward(const backend::cpu&, T* y, const T* a, const T* b, index_t n) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
template <class T>
void add_backward(const backend::cpu&, T* da, T* db, const T* dy, index_t n) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) {
        if (da) da[i] += dy[i];
        if (db) db[i] += dy[i];
    }
}

template <class T>
void mul_forward(const backend::cpu&, T* y, const T* a, const T* b, index_t n) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}
template <class T>
void mul_backward(const backend::cpu&, T* da, T* db, const T* dy, const T* a, const T* b, index_t n) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) {
        if (da) da[i] += dy[i] * b[i];
        if (db) db[i] += dy[i] * a[i];
    }
}

template <class T>
void scale_forward(const backend::cpu&, T* y, const T* x, T s, index_t n) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) y[i] = s * x[i];
}
template <class T>
void scale_backward(const backend::cpu&, T* dx, const T* dy, T s, index_t n) {
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < n; i++) dx[i] += s * dy[i];
}

template <class T>
void add_row_forward(const backend::cpu&, T* y, const T* x, const T* r, index_t N, index_t C) {
    ALIGNGPT_OMP_FOR
    for (index_t n = 0; n < N; n++)
        for (index_t c = 0; c < C; c++) y[n * C + c] = x[n * C + c] + r[c];
}
template <class T>
void add_row_backward(const backend::cpu& be, T* dx, T* dr, const T* dy, index_t N, index_t C) {
    if (dx) add_backward<T>(be, dx, nullptr, dy, N * C);
    if (dr) {
        ALIGNGPT_OMP_FOR
        for (index_t c = 0; c < C; c++) {
            T acc = 0;
            for (index_t n = 0; n < N; n++) acc += dy[n * C + c];
            dr[c] += acc;
        }
    }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// a + b (same shape).
template <class T, class Backend>
autograd::variable<T, Backend> add(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& a,
                                   const autograd::variable<T, Backend>& b) {
    const Backend& be = a.backend();
    ALIGNGPT_CHECK(a.shape() == b.shape(), "add: shapes ", detail::shape_str(a.shape()), " and ", detail::shape_str(b.shape()),
                   " differ");
    tensor<T, Backend> y(a.shape(), be);
    const index_t n = y.numel();
    add_forward(be, y.data(), a.value().data(), b.value().data(), n);
    return autograd::tape<T, Backend>::record(tp, "add", y, {a, b}, [a, b, n](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        T* da = a.requires_grad() ? a.get()->grad_buffer().data() : nullptr;
        T* db = b.requires_grad() ? b.get()->grad_buffer().data() : nullptr;
        add_backward(bk, da, db, out.grad.data(), n);
    });
}

/// a * b elementwise (same shape).
template <class T, class Backend>
autograd::variable<T, Backend> mul(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& a,
                                   const autograd::variable<T, Backend>& b) {
    const Backend& be = a.backend();
    ALIGNGPT_CHECK(a.shape() == b.shape(), "mul: shapes ", detail::shape_str(a.shape()), " and ", detail::shape_str(b.shape()),
                   " differ");
    tensor<T, Backend> y(a.shape(), be);
    const index_t n = y.numel();
    mul_forward(be, y.data(), a.value().data(), b.value().data(), n);
    return autograd::tape<T, Backend>::record(tp, "mul", y, {a, b}, [a, b, n](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        T* da = a.requires_grad() ? a.get()->grad_buffer().data() : nullptr;
        T* db = b.requires_grad() ? b.get()->grad_buffer().data() : nullptr;
        mul_backward(bk, da, db, out.grad.data(), a.value().data(), b.value().data(), n);
    });
}

/// s * x for a constant s.
template <class T, class Backend>
autograd::variable<T, Backend> scale(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x, T s) {
    const Backend& be = x.backend();
    tensor<T, Backend> y(x.shape(), be);
    const index_t n = y.numel();
    scale_forward(be, y.data(), x.value().data(), s, n);
    return autograd::tape<T, Backend>::record(tp, "scale", y, {x}, [x, s, n](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        scale_backward(bk, x.get()->grad_buffer().data(), out.grad.data(), s, n);
    });
}

/// x + r with r [C] broadcast over every row of x [..., C] (a bias add).
template <class T, class Backend>
autograd::variable<T, Backend> add_row(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x,
                                       const autograd::variable<T, Backend>& r) {
    const Backend& be = x.backend();
    const index_t C = r.value().numel();
    ALIGNGPT_CHECK(r.value().dim() == 1 && x.value().dim() >= 1 && x.shape().back() == C, "add_row: input ",
                   detail::shape_str(x.shape()), " does not match row ", detail::shape_str(r.shape()));
    const index_t N = C ? x.value().numel() / C : 0;
    tensor<T, Backend> y(x.shape(), be);
    add_row_forward(be, y.data(), x.value().data(), r.value().data(), N, C);
    return autograd::tape<T, Backend>::record(tp, "add_row", y, {x, r}, [x, r, N, C](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        T* dx = x.requires_grad() ? x.get()->grad_buffer().data() : nullptr;
        T* dr = r.requires_grad() ? r.get()->grad_buffer().data() : nullptr;
        add_row_backward(bk, dx, dr, out.grad.data(), N, C);
    });
}

}  // namespace aligngpt::ag
