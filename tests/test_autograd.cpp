// The tape: finite-difference gradients of linear, gradient accumulation, frozen inputs,
// no_grad, and activation checkpointing giving the same bits as recording.
#include <doctest/doctest.h>

#include <cstring>
#include <sstream>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/ops/linear.h"

namespace test_autograd {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::autograd;

TEST_CASE("linear backward matches finite differences (double, tol 1e-8: smooth op, h=1e-6)") {
    auto x = random_leaf<double>({3, 5, 7}, 1), w = random_leaf<double>({4, 7}, 2), b = random_leaf<double>({4}, 3);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<variable<double>>& v) {
        return ag::linear(tp, v[0], v[1], v[2]);
    };
    CHECK(grad_check(f, {x, w, b}) <= 1e-8);
}

TEST_CASE("frozen inputs get no gradient buffer; no_grad records nothing") {
    auto x = random_leaf<float>({2, 3}, 1, true), w = random_leaf<float>({4, 3}, 2, false);
    tape<float> tp;
    auto y = ag::linear(&tp, x, w);
    CHECK(tp.size() == 1);
    tensor<float> seed(y.shape());
    seed.fill(1.f);
    tp.backward(y, seed);
    CHECK(x.grad().defined());
    CHECK_FALSE(w.grad().defined());
    {
        no_grad<float, backend::cpu> guard(&tp);
        auto z = ag::linear(&tp, x, w);
        CHECK_FALSE(z.requires_grad());
    }
    CHECK(tp.size() == 1);
    tape<float>* inference = nullptr;  // null tape: inference
    auto z = ag::linear(inference, x, w);
    CHECK(std::memcmp(z.value().data(), y.value().data(), sizeof(float) * 8) == 0);
}

TEST_CASE("gradients accumulate across backward calls (gradient accumulation)") {
    auto x = random_leaf<double>({2, 3}, 1), w = random_leaf<double>({4, 3}, 2);
    tensor<double> seed({2, 4});
    seed.fill(1.0);
    tape<double> tp;
    auto y = ag::linear(&tp, x, w);
    tp.backward(y, seed);
    const auto once = w.grad().to_vector();
    tape<double> tp2;
    auto y2 = ag::linear(&tp2, x, w);
    tp2.backward(y2, seed);
    const auto twice = w.grad().to_vector();
    for (size_t i = 0; i < once.size(); i++) CHECK(twice[i] == doctest::Approx(2 * once[i]));
}

TEST_CASE("repro: checkpointed block gives the same bits as the recorded block") {
    auto w1 = random_leaf<float>({16, 8}, 2), w2 = random_leaf<float>({8, 16}, 3);
    auto block = [&](tape<float>* tp, const variable<float>& x) { return ag::linear(tp, ag::linear(tp, x, w1), w2); };
    tensor<float> seed({4, 8});
    rng::fill_uniform(seed.data(), seed.numel(), 5, 5, 1.f);

    auto x = random_leaf<float>({4, 8}, 1);
    tape<float> plain;
    plain.backward(block(&plain, x), seed);
    const auto dx = x.grad().to_vector(), dw1 = w1.grad().to_vector();

    x.zero_grad(), w1.zero_grad(), w2.zero_grad();
    tape<float> ck;
    auto y = checkpoint(&ck, block, x);
    CHECK(ck.size() == 1);
    ck.backward(y, seed);
    CHECK(std::memcmp(dx.data(), x.grad().data(), dx.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(dw1.data(), w1.grad().data(), dw1.size() * sizeof(float)) == 0);
}

TEST_CASE("tape prints one line per node in creation order") {
    auto x = random_leaf<float>({2, 3}, 1);
    auto w = variable<float>::leaf(tensor<float>({4, 3}), true, "mm_projector.0.weight");
    tape<float> tp;
    ag::linear(&tp, ag::linear(&tp, x, w), variable<float>::leaf(tensor<float>({2, 4}), true, "p"));
    std::ostringstream os;
    tp.print(os);
    CHECK(os.str() == "#0 linear(x1, mm_projector.0.weight) [2,4]\n#1 linear(#0, p) [2,2]\n");
}

TEST_CASE("linear rejects mismatched shapes naming both") {
    auto x = random_leaf<float>({2, 3}, 1), w = random_leaf<float>({4, 5}, 2);
    tape<float>* none = nullptr;
    CHECK_THROWS_WITH_AS(ag::linear(none, x, w), doctest::Contains("linear: input [2,3] does not match weight [4,5]"),
                         aligngpt::error);
}

}  // namespace test_autograd
