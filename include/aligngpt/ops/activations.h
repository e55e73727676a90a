#pragma once
// Pointwise activations, forward and backward side by side.
//
//   gelu(x)       = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))          exact erf form (Hendrycks & Gimpel
//                   2016, eq. 1), torch GELU(approximate='none'): projector and gate MLPs
//   gelu'(x)      = Phi(x) + x phi(x),   phi(x) = exp(-x^2/2) / sqrt(2 pi)
//
//   quick_gelu(x) = x s(1.702 x),  s = sigmoid                       CLIP's approximation (Radford et
//                   al. 2021; Hendrycks & Gimpel 2016, sec. 2): the vision tower
//   quick_gelu'   = s + 1.702 x s (1 - s)
//
//   silu(x)       = x s(x)                                          (Elfwing et al. 2018; "Swish")
//   silu'(x)      = s + x s (1 - s) = s (1 + x (1 - s))
//
//   swiglu(g, u)  = silu(g) * u                                     (Shazeer 2020, "GLU Variants
//                   Improve Transformer", eq. 6 without the projections): the LLaMA MLP, fused
//   dg = dy u silu'(g)        du = dy silu(g)
//
// Shapes: every buffer has n elements. Backward accumulates (+=) into dx (dg, du; each may be null).
// Reproducibility: purely elementwise; threads split the elements they write. The sigmoid's exp is
// ops/exp.h, gelu's erf ops/erf.h (float: ours, the same bits in scalar and vector code and on a
// GPU; double: std::exp, std::erf).
#include <algorithm>
#include <cmath>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/erf.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/isa.h"

namespace aligngpt::ops {

// Scalar helpers (named *_scalar so they never collide with ops of the same name). The kernels
// inline them, so contraction is off here as it is in the kernels (ops/isa.h); backend::cuda's
// kernels call the same functions (ALIGNGPT_HD).
ALIGNGPT_FP_STRICT_BEGIN
template <class T>
ALIGNGPT_HD T sigmoid_scalar(T x) {
    return T(1) / (T(1) + exp_of(T(-x)));
}

template <class T>
ALIGNGPT_HD T gelu_scalar(T x) {
    return x * T(0.5) * (T(1) + erf_of(T(x * T(0.70710678118654752440))));
}
template <class T>
ALIGNGPT_HD T gelu_grad_scalar(T x) {
    const T cdf = T(0.5) * (T(1) + erf_of(T(x * T(0.70710678118654752440))));  // Phi(x)
    const T pdf = exp_of(T(T(-0.5) * x * x)) * T(0.39894228040143267794);      // phi(x)
    return cdf + x * pdf;
}
template <class T>
ALIGNGPT_HD T silu_grad_scalar(T x) {
    const T s = sigmoid_scalar(x);
    return s * (T(1) + x * (T(1) - s));
}
ALIGNGPT_FP_STRICT_END

}  // namespace aligngpt::ops

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/activations.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

template <class T>
void gelu_forward(const backend::cpu& be, T* y, const T* x, index_t n) {
    ALIGNGPT_ISA_DISPATCH(gelu_forward<T>, be, y, x, n)
}

template <class T>
void gelu_backward(const backend::cpu& be, T* dx, const T* dy, const T* x, index_t n) {
    ALIGNGPT_ISA_DISPATCH(gelu_backward<T>, be, dx, dy, x, n)
}

template <class T>
void quick_gelu_forward(const backend::cpu& be, T* y, const T* x, index_t n) {
    ALIGNGPT_ISA_DISPATCH(quick_gelu_forward<T>, be, y, x, n)
}

template <class T>
void quick_gelu_backward(const backend::cpu& be, T* dx, const T* dy, const T* x, index_t n) {
    ALIGNGPT_ISA_DISPATCH(quick_gelu_backward<T>, be, dx, dy, x, n)
}

template <class T>
void silu_forward(const backend::cpu& be, T* y, const T* x, index_t n) {
    ALIGNGPT_ISA_DISPATCH(silu_forward<T>, be, y, x, n)
}

template <class T>
void silu_backward(const backend::cpu& be, T* dx, const T* dy, const T* x, index_t n) {
    ALIGNGPT_ISA_DISPATCH(silu_backward<T>, be, dx, dy, x, n)
}

template <class T>
void swiglu_forward(const backend::cpu& be, T* y, const T* g, const T* u, index_t n) {
    ALIGNGPT_ISA_DISPATCH(swiglu_forward<T>, be, y, g, u, n)
}

template <class T>
void swiglu_backward(const backend::cpu& be, T* dg, T* du, const T* dy, const T* g, const T* u, index_t n) {
    ALIGNGPT_ISA_DISPATCH(swiglu_backward<T>, be, dg, du, dy, g, u, n)
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

/// One unary pointwise op on the tape: y = fwd(x), dx += bwd(dy, x). fwd and bwd call the kernels
/// unqualified, so the backend of x picks them (argument-dependent lookup).
template <class T, class Backend, class Fwd, class Bwd>
autograd::variable<T, Backend> unary_pointwise(autograd::tape<T, Backend>* tp, const char* op,
                                               const autograd::variable<T, Backend>& x, Fwd fwd, Bwd bwd) {
    const Backend& be = x.backend();
    tensor<T, Backend> y(x.shape(), be);
    const index_t n = y.numel();
    fwd(be, y.data(), x.value().data(), n);
    return autograd::tape<T, Backend>::record(tp, op, y, {x}, [x, n, bwd](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        bwd(bk, x.get()->grad_buffer().data(), out.grad.data(), x.value().data(), n);
    });
}

template <class T, class Backend>
autograd::variable<T, Backend> gelu(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    return unary_pointwise(
        tp, "gelu", x, [](const auto& be, auto... a) { gelu_forward(be, a...); },
        [](const auto& be, auto... a) { gelu_backward(be, a...); });
}
template <class T, class Backend>
autograd::variable<T, Backend> quick_gelu(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    return unary_pointwise(
        tp, "quick_gelu", x, [](const auto& be, auto... a) { quick_gelu_forward(be, a...); },
        [](const auto& be, auto... a) { quick_gelu_backward(be, a...); });
}
template <class T, class Backend>
autograd::variable<T, Backend> silu(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x) {
    return unary_pointwise(
        tp, "silu", x, [](const auto& be, auto... a) { silu_forward(be, a...); },
        [](const auto& be, auto... a) { silu_backward(be, a...); });
}

/// silu(g) * u, fused (LLaMA MLP: g = gate_proj(x), u = up_proj(x)); g and u have the same shape.
template <class T, class Backend>
autograd::variable<T, Backend> swiglu(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& g,
                                      const autograd::variable<T, Backend>& u) {
    const Backend& be = g.backend();
    ALIGNGPT_CHECK(g.shape() == u.shape(), "swiglu: gate ", detail::shape_str(g.shape()), " and up ",
                   detail::shape_str(u.shape()), " differ");
    tensor<T, Backend> y(g.shape(), be);
    const index_t n = y.numel();
    swiglu_forward(be, y.data(), g.value().data(), u.value().data(), n);
    return autograd::tape<T, Backend>::record(tp, "swiglu", y, {g, u}, [g, u, n](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        T* dg = g.requires_grad() ? g.get()->grad_buffer().data() : nullptr;
        T* du = u.requires_grad() ? u.get()->grad_buffer().data() : nullptr;
        swiglu_backward(bk, dg, du, out.grad.data(), g.value().data(), u.value().data(), n);
    });
}

}  // namespace aligngpt::ag
