// train/optim.h: AdamW, schedules, clipping, non-finite check and gradient accumulation, against
// tests/golden/train_optim.safetensors (recipe: tests/tools/golden/train_optim.py; torch 1.13 and
// transformers 4.31 on the CPU).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "aligngpt/nn/module.h"
#include "aligngpt/train/optim.h"
#include "support/golden.h"

namespace test_train_optim {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::train;

namespace {

const std::vector<std::pair<std::string, shape_t>> optim_params = {
    {"layers.0.mlp.weight", {3, 37}}, {"layers.0.mlp.bias", {37}}, {"layers.0.input_layernorm.weight", {37}}};
constexpr int optim_steps = 6;

/// Distance in units in the last place between two finite floats of the same sign class.
std::int64_t ulp_distance(float a, float b) {
    auto key = [](float x) {
        std::int32_t i;
        std::memcpy(&i, &x, 4);
        return i < 0 ? std::int64_t(INT32_MIN) - i : std::int64_t(i);
    };
    return std::abs(key(a) - key(b));
}
std::int64_t max_ulps(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    std::int64_t m = 0;
    for (std::size_t i = 0; i < a.size(); i++) m = std::max(m, ulp_distance(a[i], b[i]));
    return m;
}
std::vector<float> row(const std::vector<float>& stacked, int k, std::size_t n) {
    return std::vector<float>(stacked.begin() + std::ptrdiff_t(k * n), stacked.begin() + std::ptrdiff_t((k + 1) * n));
}

/// Runs one golden run through train::adamw and returns the worst ulp distance of p, m, v over all
/// steps; lr must equal the golden's exactly.
std::int64_t run_golden(const golden::fixture& fx, const std::string& tag, schedule kind, double wd, first_moment rule) {
    std::vector<autograd::variable<float>> vars;
    for (const auto& [n, s] : optim_params) vars.push_back(autograd::variable<float>::leaf(fx.tensor("init." + n), true, n));
    adamw opt(vars, {0.9, 0.999, 1e-8, wd, rule});
    const std::vector<double> lrs = fx.get<double>(tag + ".lr");
    std::int64_t worst = 0;
    for (int k = 0; k < optim_steps; k++) {
        const double lr = lr_at(kind, 2e-3, k, optim_steps, warmup_steps(optim_steps, 0.34));
        CHECK_MESSAGE(lr == lrs[std::size_t(k)], tag << " step " << k);
        for (std::size_t i = 0; i < vars.size(); i++)
            vars[i].grad() = fx.tensor("grad" + std::to_string(k) + "." + optim_params[i].first);
        opt.step(lr);
        const auto state = opt.export_state();
        for (std::size_t i = 0; i < vars.size(); i++) {
            const std::string& n = optim_params[i].first;
            const std::size_t numel = std::size_t(vars[i].value().numel());
            worst = std::max(worst, max_ulps(vars[i].value().to_vector(), row(fx.get(tag + "." + n + ".p"), k, numel)));
            worst = std::max(worst, max_ulps(state[3 * i].second.to_vector(), row(fx.get(tag + "." + n + ".m"), k, numel)));
            worst = std::max(worst, max_ulps(state[3 * i + 1].second.to_vector(), row(fx.get(tag + "." + n + ".v"), k, numel)));
        }
    }
    return worst;
}

/// The tree of the header written as a recursion: tree(K) = tree(2^p) + tree(K - 2^p).
std::vector<float> tree_sum(const std::vector<std::vector<float>>& g, std::size_t b, std::size_t K) {
    if (K == 1) return g[b];
    std::size_t half = 1;
    while (half * 2 < K) half *= 2;
    std::vector<float> l = tree_sum(g, b, half), r = tree_sum(g, b + half, K - half);
    for (std::size_t i = 0; i < l.size(); i++) l[i] += r[i];
    return l;
}

}  // namespace

TEST_CASE("adamw matches torch.optim.AdamW (1.13) and torch 2.x's lerp_ update, with HF's two groups") {
    // Tolerance: bit equality (0 ulp). Our op sequence is torch's, with fma exactly where torch's
    // AVX2 kernels fuse (measured on 1003 values: unfused, m differs by 1 ulp in 9% of elements, v in 0.3%).
    // Bias corrections, step size and lr are Python floats on both sides (double, same libm pow).
    const auto fx = golden::load("train_optim");
    for (const char* s : {"constant", "constant_with_warmup", "linear", "cosine"}) {
        CAPTURE(s);
        CHECK(run_golden(fx, std::string("mul_add.") + s + ".wd", parse_schedule(s), 0.1, first_moment::mul_add) == 0);
    }
    CHECK(run_golden(fx, "mul_add.cosine.nowd", schedule::cosine, 0.0, first_moment::mul_add) == 0);
    CHECK(run_golden(fx, "lerp.cosine.wd", schedule::cosine, 0.1, first_moment::lerp) == 0);
    CHECK(run_golden(fx, "lerp.linear.nowd", schedule::linear, 0.0, first_moment::lerp) == 0);
    // The two rules really differ (else the lerp runs would not test anything).
    CHECK(run_golden(fx, "mul_add.cosine.nowd", schedule::cosine, 0.0, first_moment::lerp) > 0);
}

TEST_CASE("adamw: decay groups by name, skipped parameters, state export/import") {
    CHECK(decays("model.layers.0.mlp.gate_proj.weight"));
    CHECK(decays("mm_projector.0.weight"));
    CHECK_FALSE(decays("mm_projector.0.bias"));
    CHECK_FALSE(decays("model.layers.3.input_layernorm.weight"));
    CHECK_FALSE(decays("model.layers.3.post_attention_layernorm.weight"));
    CHECK_FALSE(decays("model.norm.weight"));
    CHECK_FALSE(decays("vision_tower.vision_model.pre_layrnorm.weight"));
    CHECK_FALSE(decays("vision_tower.vision_model.encoder.layers.0.layer_norm1.weight"));
    CHECK_FALSE(decays("q_norm.weight"));

    auto w = autograd::variable<float>::leaf(golden::hashfill("st.w", {4, 5}, 1.0f), true, "w");
    auto b = autograd::variable<float>::leaf(golden::hashfill("st.b", {5}, 1.0f), true, "b.bias");
    adamw opt({w, b}, {0.9, 0.999, 1e-8, 0.01, first_moment::lerp});
    CHECK(opt.decays(0));
    CHECK_FALSE(opt.decays(1));
    w.grad() = golden::hashfill("st.gw", {4, 5}, 0.1f);  // b has no gradient: skipped, as torch skips grad None
    const std::vector<float> b0 = b.value().to_vector();
    opt.step(1e-3);
    CHECK(opt.step_count(0) == 1);
    CHECK(opt.step_count(1) == 0);
    CHECK(b.value().to_vector() == b0);

    // Round trip: a second optimizer resumed from the state takes the same next step, bit for bit.
    auto state = opt.export_state();
    REQUIRE(state.size() == 6);
    CHECK(state[0].first == "w.exp_avg");
    CHECK(state[5].first == "b.bias.step");
    auto w2 = autograd::variable<float>::leaf(w.value().clone(), true, "w");
    auto b2 = autograd::variable<float>::leaf(b.value().clone(), true, "b.bias");
    adamw opt2({w2, b2}, opt.options());
    opt2.import_state(state, "ckpt/optimizer.safetensors");
    w.grad() = golden::hashfill("st.gw2", {4, 5}, 0.1f);
    w2.grad() = w.grad().clone();
    opt.step(5e-4);
    opt2.step(5e-4);
    CHECK(w2.value().to_vector() == w.value().to_vector());
    CHECK(opt2.step_count(0) == 2);

    auto expect_error = [&](std::vector<std::pair<std::string, tensor<float>>> s, const std::string& part) {
        std::string msg;
        try {
            opt2.import_state(s, "ckpt/optimizer.safetensors");
        } catch (const aligngpt::error& e) { msg = e.what(); }
        CHECK_MESSAGE(msg.find("ckpt/optimizer.safetensors") != std::string::npos, msg);
        CHECK_MESSAGE(msg.find(part) != std::string::npos, msg);
    };
    auto bad = state;
    bad[1].second = tensor<float>({4, 4});
    expect_error(bad, "w.exp_avg_sq has shape [4,4]");
    bad = state;
    bad.pop_back();
    expect_error(bad, "5 tensors");
    bad = state;
    bad[5].first = "c.step";
    expect_error(bad, "lacks b.bias.step");
    bad = state;
    bad[2].second = tensor<float>::from({1.5f}, {});
    expect_error(bad, "w.step = 1.5");
    const std::vector<float> before = w2.value().to_vector();
    CHECK(opt2.step_count(0) == 2);  // nothing changed by the failed imports
    CHECK(w2.value().to_vector() == before);
}

TEST_CASE("adamw::for_module takes the trainable parameters in visit order, named as the module names them") {
    auto proj = nn::linear<float>::make("mm_projector.0", 4, 3);  // parameters start frozen
    CHECK(adamw::for_module(proj, {}).size() == 0);
    nn::set_trainable(proj, true);
    const adamw opt = adamw::for_module(proj, {});
    REQUIRE(opt.size() == 2);
    CHECK(opt.name(0) == "mm_projector.0.weight");
    CHECK(opt.decays(0));
    CHECK(opt.name(1) == "mm_projector.0.bias");
    CHECK_FALSE(opt.decays(1));
    nn::set_trainable(proj, false);
    CHECK(adamw::for_module(proj, {}).size() == 0);
}

TEST_CASE("schedules equal transformers 4.31 get_scheduler through LambdaLR, bit for bit") {
    // Exact: both sides evaluate the same double expressions in the same order (libm cos).
    const auto fx = golden::load("train_optim");
    CHECK(warmup_steps(50, 0.03) == 2);
    for (const char* s : {"constant", "constant_with_warmup", "linear", "cosine"}) {
        CAPTURE(s);
        const std::vector<double> ref = fx.get<double>(std::string("sched.") + s);
        for (int k = 0; k < 50; k++) CHECK(lr_at(parse_schedule(s), 1e-3, k, 50, 2) == ref[std::size_t(k)]);
    }
    CHECK(lr_at(schedule::cosine, 1e-3, 0, 50, 2) == 0.0);  // the first update uses scheduler step 0
    std::string msg;
    try {
        parse_schedule("cosine_with_restarts", "--lr_scheduler_type");
    } catch (const aligngpt::error& e) { msg = e.what(); }
    CHECK(msg.find("--lr_scheduler_type") != std::string::npos);
    CHECK(msg.find("cosine_with_restarts") != std::string::npos);
}

TEST_CASE("total_steps and warmup_steps follow Trainer and TrainingArguments (4.31)") {
    CHECK(total_steps(1000, 4, 1.0) == 250);
    CHECK(total_steps(1001, 4, 1.0) == 250);     // len // grad_accum
    CHECK(total_steps(3, 4, 2.0) == 2);          // at least 1 update per epoch
    CHECK(total_steps(10, 1, 1.5) == 15);        // ceil(epochs * per_epoch)
    CHECK(total_steps(7, 2, 0.5) == 2);          // ceil(0.5 * 3)
    CHECK(total_steps(1000, 4, 3.0, 17) == 17);  // max_steps wins
    CHECK(warmup_steps(2181, 0.03) == 66);       // ceil(65.43)
    CHECK(warmup_steps(100, 0.03) == 3);
    CHECK(warmup_steps(100, 0.03, 7) == 7);
}

TEST_CASE("clip_grad_norm: total as torch.nn.utils.clip_grad_norm_, gradients scaled as torch scales them") {
    // Our total is computed in double in a fixed blocked order; torch's per-tensor norms are f32,
    // so the totals agree to f32 rounding (relative 1e-6). The coefficient is computed from the
    // f32 total as torch does; the clipped gradients then agree to 1 ulp.
    const auto fx = golden::load("train_optim");
    for (const auto& run : std::vector<std::pair<std::string, double>>{{"clip1", 1.0}, {"clip100", 100.0}}) {
        const std::string& tag = run.first;
        const double max_norm = run.second;
        CAPTURE(tag);
        std::vector<tensor<float>> g;
        for (const auto& [n, s] : optim_params) g.push_back(fx.tensor(tag + ".in." + n));
        const double ref = fx.get(tag + ".total")[0];
        const double total = clip_grad_norm(g, max_norm);
        CHECK(std::abs(total - ref) <= 1e-6 * ref);
        for (std::size_t i = 0; i < g.size(); i++)
            CHECK(max_ulps(g[i].to_vector(), fx.get(tag + ".out." + optim_params[i].first)) <= 1);
    }
    // Thread count does not change the total (blocks of 4096: use more than one block).
    std::vector<tensor<float>> big{golden::hashfill("clip.big", {3, 5000}, 1.0f), golden::hashfill("clip.big2", {77}, 3.0f)};
    const int threads = max_threads();
    set_threads(1);
    const double one = grad_norm(big);
    set_threads(std::max(2, threads));
    CHECK(grad_norm(big) == one);
    set_threads(threads);
}

TEST_CASE("non-finite gradients and loss are detected before any state is touched") {
    std::vector<tensor<float>> g{golden::hashfill("nf.a", {3, 4}, 1.0f), tensor<float>(), golden::hashfill("nf.b", {5}, 1.0f)};
    CHECK(first_non_finite(g) == -1);
    CHECK(all_finite(g, 2.5));
    CHECK_FALSE(all_finite(g, std::numeric_limits<double>::quiet_NaN()));
    g[2].data()[4] = std::numeric_limits<float>::infinity();
    CHECK(first_non_finite(g) == 2);
    g[0].data()[7] = std::numeric_limits<float>::quiet_NaN();
    CHECK(first_non_finite(g) == 0);
    CHECK_FALSE(all_finite(g, 1.0));
}

TEST_CASE("grad_accumulator: the fixed tree in micro-batch order, bit for bit, with at most log2(K)+1 partials") {
    for (int K = 1; K <= 9; K++) {
        CAPTURE(K);
        std::vector<std::vector<float>> a, b;  // two gradient tensors per micro-batch
        for (int i = 0; i < K; i++) {
            // mixed magnitudes so that the order of additions shows in the bits
            a.push_back(golden::hashfill("acc.a" + std::to_string(i), {7, 9}, float(std::pow(10.0, i % 4))).to_vector());
            b.push_back(golden::hashfill("acc.b" + std::to_string(i), {5}, 1.0f).to_vector());
        }
        grad_accumulator acc(K);
        std::size_t most = 0;
        for (int i = 0; i < K; i++) {
            acc.push({tensor<float>::from(a[std::size_t(i)], {7, 9}), tensor<float>::from(b[std::size_t(i)], {5})});
            most = std::max(most, acc.partials());
        }
        CHECK(most <= std::size_t(std::floor(std::log2(K))) + 1);
        REQUIRE(acc.ready());
        const auto out = acc.result();
        std::vector<float> ea = tree_sum(a, 0, std::size_t(K)), eb = tree_sum(b, 0, std::size_t(K));
        for (float& x : ea) x /= float(K);
        for (float& x : eb) x /= float(K);
        CHECK(out[0].to_vector() == ea);
        CHECK(out[1].to_vector() == eb);
        if (K == 1) CHECK(out[0].to_vector() == a[0]);  // identity
        CHECK(acc.pushed() == 0);                       // ready for the next step
    }
    // K=4 is ((g0+g1)+(g2+g3)), not the running sum ((g0+g1)+g2)+g3: the test data tells them apart.
    std::vector<std::vector<float>> g;
    for (int i = 0; i < 4; i++)
        g.push_back(golden::hashfill("acc.a" + std::to_string(i), {7, 9}, float(std::pow(10.0, i))).to_vector());
    std::vector<float> seq = g[0];
    for (int i = 1; i < 4; i++)
        for (std::size_t j = 0; j < seq.size(); j++) seq[j] += g[std::size_t(i)][j];
    CHECK(seq != tree_sum(g, 0, 4));

    grad_accumulator acc(2);
    acc.push({tensor<float>({2, 3})});
    std::string msg;
    try {
        acc.push({tensor<float>({3, 2})});
    } catch (const aligngpt::error& e) { msg = e.what(); }
    CHECK(msg.find("micro-batch 1 gradient 0 has shape [3,2]") != std::string::npos);
    CHECK_THROWS_AS(grad_accumulator(0), aligngpt::error);
}

}  // namespace test_train_optim
