// Our promise, tested as llm.c tests it ("Nondeterminism!"): a small transformer (two LLaMA
// decoder blocks with grouped-query attention, right-padded batch of 4) forward and backward gives
// the same bits with 1, 2, 3 and 4 threads, run twice; batch 1 gives the same logits as the same
// sample inside batch 4; and all of it equals the committed tests/golden/bits.lock, which CI also
// checks from a Clang -march=native build (scripts/test, phase 2).
#include <doctest/doctest.h>

#include <cstring>

#include "aligngpt/models/llama.h"
#include "support/golden.h"

namespace test_reproducibility {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::models;

namespace {

llama_config tiny_config() {
    llama_config c;
    c.hidden_size = 64, c.intermediate_size = 96, c.num_hidden_layers = 2;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.vocab_size = 50, c.rms_norm_eps = 1e-5;
    return c;
}

// Four sequences of lengths 9, 6, 9, 3, right-padded to 9 (mask 0, label -100 on padding).
struct batch {
    index_t B = 4, T = 9;
    std::vector<index_t> len{9, 6, 9, 3};
    std::vector<std::int64_t> ids, labels, pos;
    std::vector<std::uint8_t> mask;
    batch() {
        for (index_t b = 0; b < B; b++)
            for (index_t t = 0; t < T; t++) {
                const bool real = t < len[size_t(b)];
                ids.push_back(real ? 1 + std::int64_t(rng::bits(5, std::uint64_t(b), std::uint64_t(t)) % 49) : 0);
                labels.push_back(real ? ids.back() : -100);
                pos.push_back(real ? t : 0);
                mask.push_back(real);
            }
    }
};

struct run_result {
    std::vector<float> logits, loss_and_grads;
};

run_result run_block(int threads) {
    set_threads(threads);
    llama_model<float> m(tiny_config());
    m.init(11);
    nn::set_trainable(m, true);
    const batch bt;
    autograd::tape<float> tp;
    auto x = ag::reshape(&tp, m.embed(&tp, bt.ids), {bt.B, bt.T, 64});
    auto out = m.forward(&tp, x, bt.pos, bt.mask);
    auto loss = ag::cross_entropy(&tp, out.logits, shifted_targets(bt.labels, bt.B, bt.T));
    tp.backward(loss);
    run_result r;
    r.logits = out.logits.value().to_vector();
    r.loss_and_grads.push_back(loss.value().data()[0]);
    m.visit([&](auto& p) {
        const auto g = p.grad().to_vector();
        r.loss_and_grads.insert(r.loss_and_grads.end(), g.begin(), g.end());
    });
    set_threads(max_threads());
    return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("repro: transformer block forward+backward has the same bits at 1, 2, 3, 4 threads, twice") {
    const int restore = max_threads();
    const run_result ref = run_block(1);
    for (int pass = 0; pass < 2; pass++)
        for (int threads : {1, 2, 3, 4}) {
            const run_result r = run_block(threads);
            CAPTURE(pass);
            CAPTURE(threads);
            CHECK(same_bits(r.logits, ref.logits));
            CHECK(same_bits(r.loss_and_grads, ref.loss_and_grads));
        }
    set_threads(restore);
    // The committed digests: GCC generic and Clang -march=native must both produce them.
    CHECK(golden::lock_matches("repro.block.logits", ref.logits));
    CHECK(golden::lock_matches("repro.block.loss_and_grads", ref.loss_and_grads));
}

TEST_CASE("repro: batch 1 gives the same logits as the same sample inside a padded batch of 4") {
    llama_model<float> m(tiny_config());
    m.init(11);
    const batch bt;
    auto x4 = ag::reshape<float, backend::cpu>(nullptr, m.embed(nullptr, bt.ids), {bt.B, bt.T, 64});
    const auto l4 = m.forward(nullptr, x4, bt.pos, bt.mask).logits.value().to_vector();
    const index_t V = 50;
    for (index_t b = 0; b < bt.B; b++) {
        const index_t n = bt.len[size_t(b)];
        std::vector<std::int64_t> ids(bt.ids.begin() + b * bt.T, bt.ids.begin() + b * bt.T + n), pos(static_cast<size_t>(n));
        for (index_t t = 0; t < n; t++) pos[size_t(t)] = t;
        auto x1 = ag::reshape<float, backend::cpu>(nullptr, m.embed(nullptr, ids), {1, n, 64});
        const auto l1 = m.forward(nullptr, x1, pos).logits.value().to_vector();
        CAPTURE(b);
        CHECK(std::memcmp(l1.data(), l4.data() + b * bt.T * V, size_t(n * V) * sizeof(float)) == 0);
    }
}

}  // namespace test_reproducibility
