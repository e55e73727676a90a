#pragma once
// The optimizer side of a training step (docs/training.md): AdamW as torch.optim.AdamW computes it,
// the learning-rate schedules of transformers 4.31 (LambdaLR semantics), the global gradient norm
// and clipping of torch.nn.utils.clip_grad_norm_, a non-finite check, and gradient accumulation
// over K micro-batches with a fixed binary tree (the scheme that keeps bits across processes).
//
// AdamW, per element, in float32 with torch's op order (single-tensor path, amsgrad/maximize off):
//   p  = p * f32(1 - lr*wd)                                       decoupled decay, always applied
//   m  = fma(f32(1-b1), g - m, m)            (torch >= 2.0: exp_avg.lerp_(grad, 1-b1))
//      | fma(g, f32(1-b1), m * f32(b1))     (torch 1.13: exp_avg.mul_(b1).add_(grad, alpha=1-b1))
//   v  = fma(f32(1-b2) * g, g, v * f32(b2))  (exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1-b2))
//   bc1 = 1 - b1^k, bc2 = 1 - b2^k, step = lr / bc1                in double (Python floats)
//   d  = sqrt(v) / f32(sqrt(bc2)) + f32(eps)
//   p  = p + (f32(-step) * m) / d                                  (param.addcdiv_(m, d, value=-step))
// The fma's are where torch's AVX2 kernels fuse (vec::fmadd, and GCC contracting the scalar tails):
// measured against torch 1.13 on this project's golden data, see tests/test_train_optim.cpp.
// Every element is independent, so the bits do not depend on the thread count. Contraction is off
// in this header (ALIGNGPT_FP_STRICT_BEGIN): a compiler fusing p*decay + step*m/d would change bits
// (Clang's -ffp-contract=fast ignores the pragma, as for every kernel of the project).
//
// Parameter groups (HF Trainer.create_optimizer): no weight decay for any name containing "bias"
// and for norm weights, decided by name: the module (the part before ".weight") contains "norm"
// or "layrnorm" (CLIP's pre_layrnorm). transformers 4.31 lists only nn.LayerNorm in
// ALL_LAYERNORM_LAYERS, so it *does* decay LLaMA's RMSNorm weights; later versions do not, and
// we follow them. With the reference's weight_decay = 0 the two rules give the same bits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/config.h"
#include "aligngpt/ops/isa.h"  // parallel_chunks
#include "aligngpt/tensor.h"

ALIGNGPT_FP_STRICT_BEGIN
namespace aligngpt::train {

// ---------------------------------------------------------------------------------------------
// AdamW

/// How the first moment is updated: torch >= 2.0 (the reference pins 2.1.2) uses lerp_, torch 1.13
/// mul_ + add_. They differ in the last bit for a few percent of elements.
enum class first_moment { lerp, mul_add };

struct adamw_options {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;  // HF defaults
    first_moment rule = first_moment::lerp;
};

/// One AdamW update of one tensor at 1-based step k with learning rate lr (see the header).
inline void adamw_step(std::span<float> p, std::span<const float> g, std::span<float> m, std::span<float> v, std::int64_t k,
                       double lr, const adamw_options& o) {
    ALIGNGPT_CHECK(g.size() == p.size() && m.size() == p.size() && v.size() == p.size(), "adamw_step: sizes differ (p ", p.size(),
                   ", g ", g.size(), ", m ", m.size(), ", v ", v.size(), ")");
    ALIGNGPT_CHECK(k >= 1, "adamw_step: step ", k, " must be >= 1");
    const double bc1 = 1.0 - std::pow(o.beta1, double(k)), bc2 = 1.0 - std::pow(o.beta2, double(k));
    const float decay = float(1.0 - lr * o.weight_decay), neg_step = float(-(lr / bc1));
    const float bc2_sqrt = float(std::sqrt(bc2)), eps = float(o.eps);
    const float b1 = float(o.beta1), w1 = float(1.0 - o.beta1), b2 = float(o.beta2), w2 = float(1.0 - o.beta2);
    const bool lerp = o.rule == first_moment::lerp, small = std::abs(w1) < 0.5f;  // torch's lerp branch
    float *P = p.data(), *M = m.data(), *V = v.data();
    const float* G = g.data();
    ops::parallel_chunks(index_t(p.size()), 1 << 14, [&](index_t i0, index_t i1) {
        for (index_t i = i0; i < i1; i++) {
            const float gi = G[i];
            float mi = M[i];
            if (!lerp)
                mi = std::fma(gi, w1, mi * b1);
            else if (small)
                mi = std::fma(w1, gi - mi, mi);
            else
                mi = std::fma(w1 - 1.0f, gi - mi, gi);
            const float vi = std::fma(w2 * gi, gi, V[i] * b2);
            const float d = std::sqrt(vi) / bc2_sqrt + eps;
            P[i] = P[i] * decay + (neg_step * mi) / d;
            M[i] = mi;
            V[i] = vi;
        }
    });
}

/// HF's group rule (see the header): true if `name` gets weight decay.
inline bool decays(std::string_view name) {
    if (name.find("bias") != std::string_view::npos) return false;
    std::string_view module = name;
    if (module.ends_with(".weight")) module.remove_suffix(7);
    const std::size_t dot = module.find_last_of('.');
    if (dot != std::string_view::npos) module.remove_prefix(dot + 1);
    std::string lower(module);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return lower.find("norm") == std::string::npos && lower.find("layrnorm") == std::string::npos;
}

/// AdamW over a fixed list of named parameters (aligngpt::variable<float>), holding their moments.
/// A parameter whose gradient is undefined is skipped and its step count stays (torch skips a
/// parameter whose .grad is None the same way).
class adamw {
public:
    using var = autograd::variable<float>;

    adamw(std::vector<var> params, adamw_options o) : opt_(o) {
        std::map<std::string, std::size_t, std::less<>> seen;
        for (var& p : params) {
            ALIGNGPT_CHECK(p.defined() && !p.name().empty(), "adamw: parameter ", seen.size(), " has no name");
            ALIGNGPT_CHECK(seen.emplace(p.name(), seen.size()).second, "adamw: parameter ", p.name(), " listed twice");
            slot s{p, tensor<float>(p.shape()), tensor<float>(p.shape()), 0, train::decays(p.name())};
            slots_.push_back(std::move(s));
        }
    }
    /// The trainable parameters of a module (requires_grad), in its visit order.
    template <class Module>
    static adamw for_module(Module& mod, adamw_options o) {
        std::vector<var> ps;
        mod.visit([&](var& p) {
            if (p.requires_grad()) ps.push_back(p);
        });
        return adamw(std::move(ps), o);
    }

    /// One update of every parameter that has a gradient, with learning rate lr.
    void step(double lr) {
        for (slot& s : slots_) {
            const tensor<float>& g = s.param.grad();
            if (!g.defined()) continue;
            ALIGNGPT_CHECK(g.shape() == s.param.shape() && g.is_contiguous(), "adamw: gradient of ", s.param.name(),
                           " has shape ", aligngpt::detail::shape_str(g.shape()), ", parameter ",
                           aligngpt::detail::shape_str(s.param.shape()));
            adamw_options o = opt_;
            if (!s.decay) o.weight_decay = 0.0;
            const std::size_t n = std::size_t(s.m.numel());
            adamw_step({s.param.value().data(), n}, {g.data(), n}, {s.m.data(), n}, {s.v.data(), n}, ++s.step, lr, o);
        }
    }

    const adamw_options& options() const { return opt_; }
    std::size_t size() const { return slots_.size(); }
    const std::string& name(std::size_t i) const { return slots_.at(i).param.name(); }
    bool decays(std::size_t i) const { return slots_.at(i).decay; }
    std::int64_t step_count(std::size_t i) const { return slots_.at(i).step; }

    /// The state as named tensors, for checkpoints: "<param>.exp_avg", "<param>.exp_avg_sq" (f32,
    /// the parameter's shape) and "<param>.step" (0-d f32, as torch keeps it: exact below 2^24).
    std::vector<std::pair<std::string, tensor<float>>> export_state() const {
        std::vector<std::pair<std::string, tensor<float>>> out;
        for (const slot& s : slots_) {
            out.emplace_back(s.param.name() + ".exp_avg", s.m.clone());
            out.emplace_back(s.param.name() + ".exp_avg_sq", s.v.clone());
            out.emplace_back(s.param.name() + ".step", tensor<float>::from({float(s.step)}, {}));
        }
        return out;
    }
    /// Loads what export_state wrote (any order, all three entries of every parameter, nothing else).
    /// `where` names the source in errors. All-or-nothing: nothing changes if an entry is bad.
    void import_state(const std::vector<std::pair<std::string, tensor<float>>>& state, const std::string& where) {
        std::map<std::string, const tensor<float>*, std::less<>> by_name;
        for (const auto& [n, t] : state)
            ALIGNGPT_CHECK(by_name.emplace(n, &t).second, where, ": optimizer state ", n, " appears twice");
        ALIGNGPT_CHECK(by_name.size() == 3 * slots_.size(), where, ": optimizer state has ", by_name.size(),
                       " tensors, expected 3 per parameter (", 3 * slots_.size(), ")");
        auto get = [&](const slot& s, const char* field, const shape_t& shape) {
            const std::string n = s.param.name() + field;
            auto it = by_name.find(n);
            ALIGNGPT_CHECK(it != by_name.end(), where, ": optimizer state lacks ", n);
            ALIGNGPT_CHECK(it->second->shape() == shape, where, ": optimizer state ", n, " has shape ",
                           aligngpt::detail::shape_str(it->second->shape()), ", expected ", aligngpt::detail::shape_str(shape));
            return it->second;
        };
        std::vector<std::int64_t> steps;
        for (const slot& s : slots_) {
            get(s, ".exp_avg", s.param.shape());
            get(s, ".exp_avg_sq", s.param.shape());
            const float k = get(s, ".step", {})->to_vector()[0];
            ALIGNGPT_CHECK(k >= 0 && k <= float(1 << 24) && k == std::floor(k), where, ": optimizer state ", s.param.name(),
                           ".step = ", k, " is not a step count");
            steps.push_back(std::int64_t(k));
        }
        for (std::size_t i = 0; i < slots_.size(); i++) {
            slot& s = slots_[i];
            s.m = get(s, ".exp_avg", s.param.shape())->contiguous().clone();
            s.v = get(s, ".exp_avg_sq", s.param.shape())->contiguous().clone();
            s.step = steps[i];
        }
    }

private:
    struct slot {
        var param;
        tensor<float> m, v;
        std::int64_t step = 0;
        bool decay = true;
    };
    adamw_options opt_;
    std::vector<slot> slots_;
};

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules (transformers 4.31 optimization.py, through torch's LambdaLR)
//
// lr = base * lambda(s), s = scheduler steps already taken: the first update uses s = 0 (lr 0 with
// warmup). Both sides compute in double (Python floats, libm's cos), so the values are equal.

enum class schedule { constant, constant_with_warmup, linear, cosine };

/// "cosine" | "linear" | "constant" | "constant_with_warmup"; `flag` names the option in errors.
inline schedule parse_schedule(std::string_view name, std::string_view flag = "--lr_scheduler_type") {
    if (name == "cosine") return schedule::cosine;
    if (name == "linear") return schedule::linear;
    if (name == "constant") return schedule::constant;
    if (name == "constant_with_warmup") return schedule::constant_with_warmup;
    fail(flag, ": unknown schedule \"", name, "\" (expected cosine, linear, constant or constant_with_warmup)");
}

/// transformers' lr_lambda(step0) times base (cosine with num_cycles 0.5).
inline double lr_at(schedule kind, double base, std::int64_t step0, std::int64_t total, std::int64_t warmup) {
    const double s = double(step0);
    if (kind == schedule::constant) return base * 1.0;
    if (step0 < warmup) return base * (s / std::max(1.0, double(warmup)));
    if (kind == schedule::constant_with_warmup) return base * 1.0;
    const double rest = double(std::max<std::int64_t>(1, total - warmup));
    if (kind == schedule::linear) return base * std::max(0.0, double(total - step0) / rest);
    const double progress = double(step0 - warmup) / rest;
    const double pi = 3.141592653589793;                                             // math.pi
    return base * std::max(0.0, 0.5 * (1.0 + std::cos(pi * 0.5 * 2.0 * progress)));  // Python's order
}

/// TrainingArguments.get_warmup_steps: warmup_steps if > 0, else ceil(total * warmup_ratio).
inline std::int64_t warmup_steps(std::int64_t total, double warmup_ratio, std::int64_t warmup_steps = 0) {
    return warmup_steps > 0 ? warmup_steps : std::int64_t(std::ceil(double(total) * warmup_ratio));
}

/// Trainer._inner_training_loop (4.31): max_steps if > 0, else
/// ceil(epochs * max(1, batches_per_epoch // grad_accum)) (the product is ceiled, not the epochs).
inline std::int64_t total_steps(std::int64_t batches_per_epoch, std::int64_t grad_accum, double epochs,
                                std::int64_t max_steps = 0) {
    if (max_steps > 0) return max_steps;
    ALIGNGPT_CHECK(batches_per_epoch >= 0 && grad_accum >= 1, "total_steps: ", batches_per_epoch,
                   " batches per epoch and gradient accumulation ", grad_accum);
    const std::int64_t per_epoch = std::max<std::int64_t>(1, batches_per_epoch / grad_accum);
    return std::int64_t(std::ceil(epochs * double(per_epoch)));
}

// ---------------------------------------------------------------------------------------------
// Gradient norm, clipping, non-finite check

/// sum_i x_i^2 in double, in blocks of 4096 summed left to right, block sums then added in block
/// order: a fixed order whatever the thread count (threads only split the blocks).
inline double sum_squares(const float* x, index_t n) {
    constexpr index_t B = 4096;
    std::vector<double> part(std::size_t((n + B - 1) / B), 0.0);
    ops::parallel_chunks(index_t(part.size()), 1, [&](index_t b0, index_t) {
        double s = 0.0;
        for (index_t i = b0 * B; i < std::min(n, b0 * B + B); i++) s += double(x[i]) * double(x[i]);
        part[std::size_t(b0)] = s;
    });
    double s = 0.0;
    for (double p : part) s += p;
    return s;
}

/// clip_grad_norm_'s total (norm_type 2): the L2 norm of the per-tensor L2 norms, in double.
inline double grad_norm(std::span<const tensor<float>> grads) {
    double s = 0.0;
    for (const tensor<float>& g : grads) {
        if (!g.defined()) continue;
        const tensor<float> c = g.contiguous();
        const double norm = std::sqrt(sum_squares(c.data(), c.numel()));
        s += norm * norm;
    }
    return std::sqrt(s);
}

/// torch.nn.utils.clip_grad_norm_(max_norm): returns the total norm before clipping and multiplies
/// every gradient by coef = min(1, max_norm / (total + 1e-6)) when coef < 1, with coef computed as
/// torch does from the f32 total (max_norm / t is t.reciprocal() * max_norm in torch).
inline double clip_grad_norm(std::span<tensor<float>> grads, double max_norm) {
    const double total = grad_norm(grads);
    const float coef = (1.0f / (float(total) + 1e-6f)) * float(max_norm);
    if (coef < 1.0f)
        for (tensor<float>& g : grads) {
            if (!g.defined()) continue;
            ALIGNGPT_CHECK(g.is_contiguous(), "clip_grad_norm: gradient is not contiguous");
            float* x = g.data();
            ops::parallel_chunks(g.numel(), 1 << 14, [&](index_t i0, index_t i1) {
                for (index_t i = i0; i < i1; i++) x[i] *= coef;
            });
        }
    return total;
}

/// Index of the first gradient holding a NaN or Inf, or -1 if all are finite. The trainer calls
/// this (and checks the loss with std::isfinite) before touching the parameters or the moments.
inline std::int64_t first_non_finite(std::span<const tensor<float>> grads) {
    for (std::size_t t = 0; t < grads.size(); t++) {
        if (!grads[t].defined()) continue;
        const tensor<float> c = grads[t].contiguous();  // no copy when contiguous
        const float* x = c.data();
        for (index_t i = 0; i < c.numel(); i++)
            if (!std::isfinite(x[i])) return std::int64_t(t);
    }
    return -1;
}
inline bool all_finite(std::span<const tensor<float>> grads, double loss) {
    return std::isfinite(loss) && first_non_finite(grads) < 0;
}

// ---------------------------------------------------------------------------------------------
// Gradient accumulation (the data-parallel scheme: each micro-batch's gradients in fresh buffers,
// a fixed binary tree in micro-batch order, one scaling at the end)
//
// Tree: micro-batches are merged like a binary counter: after each push, while the two newest
// partial sums cover equally many micro-batches, they are added (older + newer). At the end the
// remaining partials (sizes: the binary digits of K, largest first) are joined from the right:
//   K=4: (g0+g1)+(g2+g3)    K=3: (g0+g1)+g2    K=6: ((g0+g1)+(g2+g3))+(g4+g5)
//   K=7: ((g0+g1)+(g2+g3))+((g4+g5)+g6)
// i.e. tree(K) = tree(2^p) + tree(K - 2^p), 2^p the largest power of two < K (halves if K = 2^p).
// At most log2(K)+1 partial sets are alive. The sum is then divided by K once.
//
// HF instead scales each micro-loss by 1/K before backward and adds gradients in place (+=, in
// order). For K a power of two the scaling is exact (no underflow assumed), so the two differ only
// by the order of additions; for other K the scaled sums differ in the last bits.
class grad_accumulator {
public:
    explicit grad_accumulator(int K) : K_(K) { ALIGNGPT_CHECK(K >= 1, "grad_accumulator: K = ", K, " must be >= 1"); }

    int micro_batches() const { return K_; }
    int pushed() const { return pushed_; }
    bool ready() const { return pushed_ == K_; }
    std::size_t partials() const { return stack_.size(); }  // for the memory test

    /// The gradients of micro-batch pushed(), in freshly zeroed buffers; taken by value (moved in).
    void push(std::vector<tensor<float>> grads) {
        ALIGNGPT_CHECK(pushed_ < K_, "grad_accumulator: micro-batch ", pushed_, " pushed but the step has ", K_);
        if (!stack_.empty()) {
            const auto& first = stack_.front().grads;
            ALIGNGPT_CHECK(grads.size() == first.size(), "grad_accumulator: micro-batch ", pushed_, " has ", grads.size(),
                           " gradients, micro-batch 0 had ", first.size());
            for (std::size_t t = 0; t < grads.size(); t++)
                ALIGNGPT_CHECK(grads[t].shape() == first[t].shape() && grads[t].is_contiguous(), "grad_accumulator: micro-batch ",
                               pushed_, " gradient ", t, " has shape ", aligngpt::detail::shape_str(grads[t].shape()),
                               ", expected ", aligngpt::detail::shape_str(first[t].shape()));
        }
        stack_.push_back({std::move(grads), 1});
        pushed_++;
        while (stack_.size() >= 2 && stack_[stack_.size() - 2].count == stack_.back().count) merge_top();
    }

    /// After K pushes: the tree sum divided by K. Resets for the next step.
    std::vector<tensor<float>> result() {
        ALIGNGPT_CHECK(ready(), "grad_accumulator: result() after ", pushed_, " of ", K_, " micro-batches");
        while (stack_.size() >= 2) merge_top();
        std::vector<tensor<float>> out = std::move(stack_.back().grads);
        stack_.clear();
        pushed_ = 0;
        if (K_ > 1) {
            const float k = float(K_);
            for (tensor<float>& g : out) {
                float* x = g.data();
                ops::parallel_chunks(g.numel(), 1 << 14, [&](index_t i0, index_t i1) {
                    for (index_t i = i0; i < i1; i++) x[i] /= k;
                });
            }
        }
        return out;
    }

private:
    struct partial {
        std::vector<tensor<float>> grads;
        int count;
    };
    void merge_top() {  // second-newest += newest (older on the left)
        partial right = std::move(stack_.back());
        stack_.pop_back();
        partial& left = stack_.back();
        for (std::size_t t = 0; t < left.grads.size(); t++) {
            float* a = left.grads[t].data();
            const float* b = right.grads[t].data();
            ops::parallel_chunks(left.grads[t].numel(), 1 << 14, [&](index_t i0, index_t i1) {
                for (index_t i = i0; i < i1; i++) a[i] += b[i];
            });
        }
        left.count += right.count;
    }

    int K_;
    int pushed_ = 0;
    std::vector<partial> stack_;
};

}  // namespace aligngpt::train
ALIGNGPT_FP_STRICT_END
