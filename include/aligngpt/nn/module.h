#pragma once
// Parameters and the layers that hold them (mlpack's "layer = parameters + one call").
//
// A parameter is a leaf variable whose name is its Hugging Face key, verbatim
// ("model.layers.0.self_attn.q_proj.weight"): loading, saving, printing and the optimizer all
// address weights by that name, so there is no renaming table anywhere.
// Every module exposes visit(f): f(variable&) for each of its parameters, in a fixed order.
//
//   nn::linear<float> fc = nn::linear<float>::make("mm_projector.0", 1024, 4096);
//   auto y = fc(&tp, x);                         // x: [..., 1024] -> [..., 4096]
#include <memory>
#include <string>
#include <type_traits>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/embedding.h"
#include "aligngpt/ops/layer_norm.h"
#include "aligngpt/ops/linear.h"
#include "aligngpt/ops/packed.h"
#include "aligngpt/ops/rms_norm.h"
#include "aligngpt/rng.h"

namespace aligngpt::nn {

using autograd::tape;
using autograd::variable;

/// A zero-filled, frozen parameter named `name`, allocated by `be`.
template <class T, class Backend = backend::cpu>
variable<T, Backend> parameter(std::string name, shape_t shape, const Backend& be = Backend::instance()) {
    return variable<T, Backend>::leaf(tensor<T, Backend>(std::move(shape), be), false, std::move(name));
}

/// Fills p with U(-a, a) from the counter-based RNG, stream = fnv1a64(name): the same numbers
/// for the same (seed, name) whatever else the model contains.
template <class T, class Backend>
void init_uniform(variable<T, Backend>& p, std::uint64_t seed, float a) {
    std::vector<T> host(size_t(p.value().numel()));
    rng::fill_uniform(host.data(), p.value().numel(), seed, rng::fnv1a64(p.name()), a);
    p.value().backend().from_host(p.value().data(), host.data(), p.value().numel());
}

/// y = x W^T + b. Frozen weights may instead live 16-bit in memory as ops::packed_weight panels
/// (set by pretrained::load_aligngpt with weights_dtype bf16/f16): the forward then streams the panels,
/// and the input gradient (stage 1 back-propagates through the frozen LLM) widens them exactly,
/// so both give the same bits as the f32 weight would.
template <class T, class Backend = backend::cpu>
struct linear {
    variable<T, Backend> weight;                                  ///< "<prefix>.weight" [out, in]
    variable<T, Backend> bias;                                    ///< "<prefix>.bias" [out], undefined when the layer has none
    std::shared_ptr<const ops::packed_weight<bf16>> packed_bf16;  ///< set: weight's value is unused
    std::shared_ptr<const ops::packed_weight<f16>> packed_f16;

    static linear make(const std::string& prefix, index_t in, index_t out, bool has_bias = true,
                       const Backend& be = Backend::instance()) {
        linear l;
        l.weight = parameter<T, Backend>(prefix + ".weight", {out, in}, be);
        if (has_bias) l.bias = parameter<T, Backend>(prefix + ".bias", {out}, be);
        return l;
    }
    /// PyTorch's default init (kaiming_uniform(a=sqrt 5) == U(+-1/sqrt(in)) for weight and bias).
    void init_default(std::uint64_t seed) {
        const float a = 1.0f / std::sqrt(float(weight.size(1)));
        init_uniform(weight, seed, a);
        if (bias.defined()) init_uniform(bias, seed, a);
    }
    bool is_packed() const { return packed_bf16 || packed_f16; }
    variable<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& x) const {
        if constexpr (std::is_same_v<T, float>) {  // panels hold 16-bit values widened to float
            if (packed_bf16) return packed_forward(tp, x, packed_bf16);
            if (packed_f16) return packed_forward(tp, x, packed_f16);
        }
        return ag::linear(tp, x, weight, bias);
    }
    /// Visitors tagged `using visits_linears = void;` (the loader) see the layer; others see its
    /// parameters.
    template <class F>
    void visit(F&& f) {
        if constexpr (requires { typename std::remove_cvref_t<F>::visits_linears; }) {
            f(*this);
        } else {
            f(weight);
            if (bias.defined()) f(bias);
        }
    }

private:
    template <class S>
    variable<T, Backend> packed_forward(tape<T, Backend>* tp, const variable<T, Backend>& x,
                                        const std::shared_ptr<const ops::packed_weight<S>>& pw) const {
        const ops::packed_weight<S>& W = *pw;
        const index_t K = x.shape().back(), N = W.N();
        ALIGNGPT_CHECK(K == W.K(), "linear: input ", detail::shape_str(x.shape()), " does not match packed weight [", N, ",",
                       W.K(), "] of ", weight.name());
        const index_t M = K ? x.value().numel() / K : 0;
        shape_t ys = x.shape();
        ys.back() = N;
        const Backend& be = x.backend();
        tensor<T, Backend> y(ys, be);
        linear_packed(be, y.data(), x.value().data(), W, bias.defined() ? bias.value().data() : nullptr, M);
        // Built whole, not pushed: GCC 12 -O3 misreads a push_back after a one-element list
        // (a false -Warray-bounds).
        const std::vector<variable<T, Backend>> in =
            bias.defined() ? std::vector<variable<T, Backend>>{x, bias} : std::vector<variable<T, Backend>>{x};
        const variable<T, Backend> b = bias;
        return tape<T, Backend>::record(tp, "linear_packed", y, in, [x, b, pw, M, N, K](autograd::node<T, Backend>& out) {
            const Backend& bk = out.value.backend();
            T* dx = x.requires_grad() ? x.get()->grad_buffer().data() : nullptr;
            T* db = b.defined() && b.requires_grad() ? b.get()->grad_buffer().data() : nullptr;
            tensor<T, Backend> w;  // dX = dY W with W widened exactly: the f32 path's bits
            if (dx) {
                w = tensor<T, Backend>({N, K}, bk);
                packed_unpack(bk, w.data(), *pw);
            }
            linear_backward(bk, dx, static_cast<T*>(nullptr), db, out.grad.data(), x.value().data(), w.data(), M, N, K);
        });
    }
};

template <class T, class Backend = backend::cpu>
struct layer_norm {
    variable<T, Backend> weight, bias;  ///< "<prefix>.weight", "<prefix>.bias" [C]
    T eps = T(1e-5);
    static layer_norm make(const std::string& prefix, index_t C, T eps = T(1e-5), const Backend& be = Backend::instance()) {
        layer_norm l{parameter<T, Backend>(prefix + ".weight", {C}, be), parameter<T, Backend>(prefix + ".bias", {C}, be), eps};
        l.weight.value().fill(T(1));
        return l;
    }
    variable<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& x) const {
        return ag::layer_norm(tp, x, weight, bias, eps);
    }
    template <class F>
    void visit(F&& f) {
        f(weight), f(bias);
    }
};

template <class T, class Backend = backend::cpu>
struct rms_norm {
    variable<T, Backend> weight;  ///< "<prefix>.weight" [C]
    T eps = T(1e-5);
    static rms_norm make(const std::string& prefix, index_t C, T eps = T(1e-5), const Backend& be = Backend::instance()) {
        rms_norm l{parameter<T, Backend>(prefix + ".weight", {C}, be), eps};
        l.weight.value().fill(T(1));
        return l;
    }
    variable<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& x) const {
        return ag::rms_norm(tp, x, weight, eps);
    }
    template <class F>
    void visit(F&& f) {
        f(weight);
    }
};

template <class T, class Backend = backend::cpu>
struct embedding {
    variable<T, Backend> weight;  ///< "<prefix>.weight" [V, C]
    index_t padding_idx = -1;
    static embedding make(const std::string& prefix, index_t V, index_t C, index_t padding_idx = -1,
                          const Backend& be = Backend::instance()) {
        return embedding{parameter<T, Backend>(prefix + ".weight", {V, C}, be), padding_idx};
    }
    variable<T, Backend> operator()(tape<T, Backend>* tp, const std::vector<std::int64_t>& ids) const {
        return ag::embedding(tp, weight, ids, padding_idx);
    }
    template <class F>
    void visit(F&& f) {
        f(weight);
    }
};

/// Number of scalars in a module's parameters.
template <class M>
index_t parameter_count(M& m) {
    index_t n = 0;
    m.visit([&](auto& p) { n += p.value().numel(); });
    return n;
}

/// Marks every parameter of a module trainable or frozen (frozen = no gradient buffer, ever).
template <class M>
void set_trainable(M& m, bool trainable) {
    m.visit([&](auto& p) { p.set_requires_grad(trainable); });
}

}  // namespace aligngpt::nn
