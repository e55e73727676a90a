#pragma once
// Gradient check by central differences, public so users can check their own ops.
//
//   L(x) = sum_i r_i * f(x)_i        r: fixed counter-based weights in [-1, 1), so every output
//                                     element matters and no gradient is accidentally symmetric
//   dL/dx_j ~ (L(x + h e_j) - L(x - h e_j)) / 2h
// Returns the largest relative error max_j |analytic - numeric| / max(1, |numeric|) over all
// inputs that require gradients. Use T = double with h ~ 1e-6: the truncation error is O(h^2)
// and the rounding error O(eps/h), both near 1e-10 for smooth ops. It perturbs inputs in place,
// so it runs on a backend whose memory the host can read (backend::cpu).
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/rng.h"

namespace aligngpt::autograd {

template <class T, class Backend = backend::cpu>
using op_under_test = std::function<variable<T, Backend>(tape<T, Backend>*, const std::vector<variable<T, Backend>>&)>;

/// Weighted sum of f's output with fixed weights; value only, no tape.
template <class T, class Backend>
T weighted_output(const op_under_test<T, Backend>& f, const std::vector<variable<T, Backend>>& xs) {
    static_assert(Backend::host_accessible, "grad_check reads and perturbs tensor memory on the host");
    const variable<T, Backend> y = f(nullptr, xs);
    T acc = 0;
    for (index_t i = 0; i < y.value().numel(); i++) acc += y.value().data()[i] * T(rng::uniform(99, 7, std::uint64_t(i), 1.f));
    return acc;
}

template <class T, class Backend = backend::cpu>
T grad_check(const op_under_test<T, Backend>& f, const std::vector<variable<T, Backend>>& xs, T h = T(1e-6)) {
    // Analytic gradients of L = sum r_i y_i: seed dy = r.
    tape<T, Backend> tp;
    for (auto x : xs) x.zero_grad();
    const variable<T, Backend> y = f(&tp, xs);
    tensor<T, Backend> seed(y.shape());
    for (index_t i = 0; i < seed.numel(); i++) seed.data()[i] = T(rng::uniform(99, 7, std::uint64_t(i), 1.f));
    tp.backward(y, seed);

    T worst = 0;
    for (const auto& x : xs) {
        if (!x.requires_grad()) continue;
        ALIGNGPT_CHECK(x.grad().defined() || x.value().numel() == 0, "grad_check: no gradient reached input ", x.name());
        tensor<T, Backend> v = x.value();  // shares storage: perturb in place, restore after
        for (index_t j = 0; j < v.numel(); j++) {
            const T orig = v.data()[j];
            v.data()[j] = orig + h;
            const T lp = weighted_output(f, xs);
            v.data()[j] = orig - h;
            const T lm = weighted_output(f, xs);
            v.data()[j] = orig;
            const T numeric = (lp - lm) / (2 * h);
            const T analytic = x.grad().defined() ? x.grad().data()[j] : T(0);
            worst = std::max(worst, std::abs(analytic - numeric) / std::max(T(1), std::abs(numeric)));
        }
    }
    return worst;
}

/// A leaf filled with counter-based uniform values in [-a, a).
template <class T, class Backend = backend::cpu>
variable<T, Backend> random_leaf(shape_t shape, std::uint64_t stream, bool requires_grad = true, float a = 1.f) {
    tensor<T, Backend> t(std::move(shape));
    rng::fill_uniform(t.data(), t.numel(), 1234, stream, a);
    return variable<T, Backend>::leaf(t, requires_grad, "x" + std::to_string(stream));
}

}  // namespace aligngpt::autograd
