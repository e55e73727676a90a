// Attention (GQA, causal with a query offset, key padding), RoPE and the CLIP patch embedding:
// finite-difference gradients, masking edge cases, decode == prefill bit for bit, thread-count
// independence, and parity with PyTorch / transformers (fixtures: tests/tools/golden/ops_attention.py).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <vector>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/ops/attention.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/linear.h"
#include "aligngpt/ops/patch_embed.h"
#include "aligngpt/ops/rope.h"
#include "support/golden.h"

namespace test_attention {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using namespace aligngpt::autograd;

namespace {

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// GQA (4 query heads over 2 kv heads), causal with past = Tk - T = 2, padded keys in batch row 1,
/// and with `mask_prefix` a left-padding mask that leaves the first query of row 1 with no key.
ops::attention_options gqa_causal_padded(bool mask_prefix) {
    ops::attention_options o;
    o.n_head = 4, o.n_kv_head = 2, o.causal = true;
    if (mask_prefix)
        o.key_mask = {1, 1, 1, 1, 1, 1, /*row 1:*/ 0, 0, 0, 1, 1, 1};
    else
        o.key_lengths = {6, 4};
    return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Finite differences (double, h = 1e-6). Tolerance 1e-8 relative: the ops are smooth (attention)
// or linear (rope, patch_embed), so the central difference is accurate to ~1e-10.

TEST_CASE("attention backward matches finite differences (GQA, causal + past, padding; double, tol 1e-8)") {
    for (bool mask_prefix : {false, true}) {
        CAPTURE(mask_prefix);
        const auto o = gqa_causal_padded(mask_prefix);
        auto q = random_leaf<double>({2, 4, 4 * 3}, 1), k = random_leaf<double>({2, 6, 2 * 3}, 2),
             v = random_leaf<double>({2, 6, 2 * 3}, 3);
        op_under_test<double> f = [o](tape<double>* tp, const std::vector<variable<double>>& x) {
            return ag::attention(tp, x[0], x[1], x[2], o);
        };
        CHECK(grad_check(f, {q, k, v}) <= 1e-8);
    }
    SUBCASE("no mask, explicit scale, one kv head (MQA)") {
        ops::attention_options o;
        o.n_head = 3, o.n_kv_head = 1, o.scale = 0.7;
        auto q = random_leaf<double>({1, 5, 3 * 4}, 4), k = random_leaf<double>({1, 3, 4}, 5),
             v = random_leaf<double>({1, 3, 4}, 6);
        op_under_test<double> f = [o](tape<double>* tp, const std::vector<variable<double>>& x) {
            return ag::attention(tp, x[0], x[1], x[2], o);
        };
        CHECK(grad_check(f, {q, k, v}) <= 1e-8);
    }
}

TEST_CASE("rope backward matches finite differences (double, tol 1e-8; none, linear, llama3)") {
    for (auto s : {ops::rope_scaling{}, ops::rope_scaling::from_name("linear", 2.0),
                   ops::rope_scaling::from_name("llama3", 8.0, 1.0, 4.0, 64)}) {
        const ag::rope_table tab(8, 10000, s);
        auto x = random_leaf<double>({2, 3, 2 * 8}, 1);
        const std::vector<std::int64_t> pos{0, 1, 2, 5, 900, 3};
        op_under_test<double> f = [&](tape<double>* tp, const std::vector<variable<double>>& v) {
            return ag::rope(tp, v[0], pos, tab);
        };
        CHECK(grad_check(f, {x}) <= 1e-8);
    }
}

TEST_CASE("patch_embed backward matches finite differences (double, tol 1e-8)") {
    auto px = random_leaf<double>({2, 3, 4, 6}, 1), w = random_leaf<double>({5, 3, 2, 2}, 2);
    op_under_test<double> f = [](tape<double>* tp, const std::vector<variable<double>>& v) {
        return ag::patch_embed(tp, v[0], v[1]);
    };
    CHECK(grad_check(f, {px, w}) <= 1e-8);
}

// ---------------------------------------------------------------------------------------------
// Masking edge cases and the KV cache.

TEST_CASE("attention: a fully masked query row gives zero output, zero probabilities and zero gradient") {
    const auto o = gqa_causal_padded(/*mask_prefix=*/true);  // row 1, query 0 sees keys {0,1,2} & {3,4,5} = {}
    auto q = random_leaf<float>({2, 4, 12}, 1), k = random_leaf<float>({2, 6, 6}, 2), v = random_leaf<float>({2, 6, 6}, 3);
    tape<float> tp;
    auto y = ag::attention(&tp, q, k, v, o);
    tensor<float> seed(y.shape());
    seed.fill(1.f);
    tp.backward(y, seed);
    for (index_t i = 0; i < 12; i++) {
        CHECK(y.value().at({1, 0, i}) == 0.f);
        CHECK(q.grad().at({1, 0, i}) == 0.f);
    }
    CHECK(y.value().at({1, 1, 0}) != 0.f);  // query 1 sees key 3
    // padded keys 0..2 of row 1 receive no gradient at all
    for (index_t j = 0; j < 3; j++)
        for (index_t i = 0; i < 6; i++) CHECK((k.grad().at({1, j, i}) == 0.f && v.grad().at({1, j, i}) == 0.f));
}

TEST_CASE("attention: padded keys get exactly zero probability (key_lengths == the equivalent 0/1 mask, bitwise)") {
    auto q = random_leaf<float>({2, 3, 8}, 1), k = random_leaf<float>({2, 5, 8}, 2), v = random_leaf<float>({2, 5, 8}, 3);
    ops::attention_options a, b;
    a.n_head = b.n_head = 2;
    a.key_lengths = {5, 2};
    b.key_mask = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0};
    const ops::attention_dims d(2, 3, 5, 4, a);
    std::vector<float> out_a(48), att_a(60), out_b(48), att_b(60);
    ops::attention_forward(backend::cpu{}, out_a.data(), att_a.data(), q.value().data(), k.value().data(), v.value().data(), d,
                           a);
    ops::attention_forward(backend::cpu{}, out_b.data(), att_b.data(), q.value().data(), k.value().data(), v.value().data(), d,
                           b);
    CHECK(same_bits(out_a, out_b));
    CHECK(same_bits(att_a, att_b));
    for (index_t h = 0; h < 2; h++)
        for (index_t t = 0; t < 3; t++)
            for (index_t j = 2; j < 5; j++) CHECK(att_a[size_t(((1 * 2 + h) * 3 + t) * 5 + j)] == 0.f);
}

TEST_CASE("attention: decode steps with past > 0 equal the rows of the full causal computation bit for bit") {
    const index_t B = 2, S = 9, NH = 4, NKV = 2, HS = 16;
    auto q = golden::hashfill<float>("dec.q", {B, S, NH * HS}, 1.f), k = golden::hashfill<float>("dec.k", {B, S, NKV * HS}, 1.f),
         v = golden::hashfill<float>("dec.v", {B, S, NKV * HS}, 1.f);
    ops::attention_options o;
    o.n_head = int(NH), o.n_kv_head = int(NKV), o.causal = true, o.key_lengths = {S, S};
    tape<float>* none = nullptr;
    auto full = ag::attention(none, variable<float>::leaf(q), variable<float>::leaf(k), variable<float>::leaf(v), o);
    // the last T rows of the queries against keys 0 .. Tk-1, with past = Tk - T (the default) or explicit
    for (auto tk_t : std::vector<std::pair<index_t, index_t>>{{9, 1}, {6, 1}, {9, 3}, {5, 2}}) {
        const index_t Tk = tk_t.first, T = tk_t.second;  // plain locals: Clang 14 cannot capture bindings
        CAPTURE(Tk);
        CAPTURE(T);
        auto qs = variable<float>::leaf(q.slice(1, Tk - T, Tk)), ks = variable<float>::leaf(k.slice(1, 0, Tk)),
             vs = variable<float>::leaf(v.slice(1, 0, Tk));
        ops::attention_options od = o;
        od.key_lengths = {Tk, Tk};
        auto step = ag::attention(none, qs, ks, vs, od);
        od.past = Tk - T;
        auto step2 = ag::attention(none, qs, ks, vs, od);
        const auto want = full.value().slice(1, Tk - T, Tk).to_vector();
        CHECK(same_bits(step.value().to_vector(), want));
        CHECK(same_bits(step2.value().to_vector(), want));
    }
}

// ---------------------------------------------------------------------------------------------
// Thread-count independence and the bits lock.

namespace {
struct attn_run {
    std::vector<float> out, dq, dk, dv, rope_y, rope_dx, patch_y, patch_dx, patch_dw;
};

attn_run run_all() {
    attn_run r;
    const index_t B = 2, T = 7, Tk = 11, NH = 6, NKV = 2, HS = 16;
    auto q = variable<float>::leaf(golden::hashfill<float>("rep.q", {B, T, NH * HS}, 1.f), true);
    auto k = variable<float>::leaf(golden::hashfill<float>("rep.k", {B, Tk, NKV * HS}, 1.f), true);
    auto v = variable<float>::leaf(golden::hashfill<float>("rep.v", {B, Tk, NKV * HS}, 1.f), true);
    ops::attention_options o;
    o.n_head = int(NH), o.n_kv_head = int(NKV), o.causal = true, o.key_lengths = {11, 8};
    tape<float> tp;
    auto y = ag::attention(&tp, q, k, v, o);
    tp.backward(y, golden::hashfill<float>("rep.dy", y.shape(), 1.f));
    r.out = y.value().to_vector(), r.dq = q.grad().to_vector(), r.dk = k.grad().to_vector(), r.dv = v.grad().to_vector();

    const ag::rope_table tab(HS, 10000);
    std::vector<std::int64_t> pos(size_t(B * T));
    for (size_t i = 0; i < pos.size(); i++) pos[i] = std::int64_t(i * 37 % 101);
    tape<float> tr;
    auto x = variable<float>::leaf(golden::hashfill<float>("rep.x", {B, T, NH * HS}, 1.f), true);
    auto ry = ag::rope(&tr, x, pos, tab);
    tr.backward(ry, golden::hashfill<float>("rep.dy", ry.shape(), 1.f));
    r.rope_y = ry.value().to_vector(), r.rope_dx = x.grad().to_vector();

    tape<float> tpe;
    auto px = variable<float>::leaf(golden::hashfill<float>("rep.px", {2, 3, 28, 14}, 1.f), true);
    auto pw = variable<float>::leaf(golden::hashfill<float>("rep.pw", {8, 3, 14, 14}, 0.1f), true);
    auto py = ag::patch_embed(&tpe, px, pw);
    tpe.backward(py, golden::hashfill<float>("rep.dy", py.shape(), 1.f));
    r.patch_y = py.value().to_vector(), r.patch_dx = px.grad().to_vector(), r.patch_dw = pw.grad().to_vector();
    return r;
}
}  // namespace

TEST_CASE("repro: attention, rope and patch_embed give identical bits on 1, 2, 3 and 4 threads") {
    const int before = max_threads();
    set_threads(1);
    const attn_run ref = run_all();
    for (int n : {2, 3, 4}) {
        CAPTURE(n);
        set_threads(n);
        const attn_run r = run_all();
        CHECK(same_bits(r.out, ref.out));
        CHECK(same_bits(r.dq, ref.dq));
        CHECK(same_bits(r.dk, ref.dk));
        CHECK(same_bits(r.dv, ref.dv));
        CHECK(same_bits(r.rope_y, ref.rope_y));
        CHECK(same_bits(r.rope_dx, ref.rope_dx));
        CHECK(same_bits(r.patch_y, ref.patch_y));
        CHECK(same_bits(r.patch_dx, ref.patch_dx));
        CHECK(same_bits(r.patch_dw, ref.patch_dw));
    }
    set_threads(before);
    CHECK(golden::lock_matches("attn.gqa_causal.out", ref.out));
    CHECK(golden::lock_matches("attn.gqa_causal.dq", ref.dq));
    CHECK(golden::lock_matches("attn.gqa_causal.dk", ref.dk));
    CHECK(golden::lock_matches("attn.gqa_causal.dv", ref.dv));
    CHECK(golden::lock_matches("attn.rope.y", ref.rope_y));
    CHECK(golden::lock_matches("attn.rope.dx", ref.rope_dx));
    CHECK(golden::lock_matches("attn.patch_embed.y", ref.patch_y));
    CHECK(golden::lock_matches("attn.patch_embed.dw", ref.patch_dw));
}

// ---------------------------------------------------------------------------------------------
// Causal skipping: ops/attention.h works in blocks of rows and leaves out the terms a causal mask
// makes zero. The plain loops of its header comment, every chain over all indices with the masked
// terms in it, must give the same bits (tolerance: none).

namespace {
template <class T>
struct plain_grads {
    std::vector<T> out, dq, dk, dv;
};

/// The header comment's loops, one fma chain per value over every index (masked terms included).
template <class T>
plain_grads<T> attention_plain(const std::vector<T>& q, const std::vector<T>& k, const std::vector<T>& v,
                               const std::vector<T>& dout, index_t B, index_t Tq, index_t Tk, int HS,
                               const ops::attention_options& o) {
    const ops::attention_dims d(B, Tq, Tk, HS, o);
    const index_t NH = d.NH, G = d.NH / d.NKV, C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T c = T(d.scale);
    plain_grads<T> g{std::vector<T>(q.size()), std::vector<T>(q.size()), std::vector<T>(k.size()), std::vector<T>(v.size())};
    std::vector<T> p(size_t(B * NH * Tq * Tk)), dS(p.size());
    for (index_t b = 0; b < B; b++)
        for (index_t h = 0; h < NH; h++)
            for (index_t t = 0; t < Tq; t++) {
                const T* qt = &q[size_t((b * Tq + t) * C + h * HS)];
                const T* dot = &dout[size_t((b * Tq + t) * C + h * HS)];
                T* pt = &p[size_t(((b * NH + h) * Tq + t) * Tk)];
                T* dSt = &dS[size_t(((b * NH + h) * Tq + t) * Tk)];
                T m = -std::numeric_limits<T>::infinity();
                for (index_t j = 0; j < Tk; j++) {
                    const T* kj = &k[size_t((b * Tk + j) * Ck + (h / G) * HS)];
                    T s = 0;
                    for (int i = 0; i < HS; i++) s = std::fma(qt[i], kj[i], s);
                    pt[j] = d.visible(o, b, t, j) ? s * c : -std::numeric_limits<T>::infinity();
                    m = std::max(m, pt[j]);
                }
                if (m == -std::numeric_limits<T>::infinity()) {
                    std::fill(pt, pt + Tk, T(0));
                } else {
                    ops::exp_shifted(pt, pt, m, Tk);
                    T z = 0;
                    for (index_t j = 0; j < Tk; j++) z += pt[j];
                    for (index_t j = 0; j < Tk; j++) pt[j] /= z;
                }
                T rowdot = 0;
                for (index_t j = 0; j < Tk; j++) {
                    const T* vj = &v[size_t((b * Tk + j) * Ck + (h / G) * HS)];
                    T dP = 0;
                    for (int i = 0; i < HS; i++) dP = std::fma(dot[i], vj[i], dP);
                    dSt[j] = dP;
                    if (d.visible(o, b, t, j)) rowdot = std::fma(dP, pt[j], rowdot);
                }
                for (index_t j = 0; j < Tk; j++) dSt[j] = d.visible(o, b, t, j) ? pt[j] * (dSt[j] - rowdot) : T(0);
                for (int i = 0; i < HS; i++) {
                    T o_i = 0, dq_i = 0;
                    for (index_t j = 0; j < Tk; j++) {
                        o_i = std::fma(pt[j], v[size_t((b * Tk + j) * Ck + (h / G) * HS + i)], o_i);
                        dq_i = std::fma(dSt[j], k[size_t((b * Tk + j) * Ck + (h / G) * HS + i)], dq_i);
                    }
                    g.out[size_t((b * Tq + t) * C + h * HS + i)] = o_i;
                    g.dq[size_t((b * Tq + t) * C + h * HS + i)] = dq_i * c;
                }
            }
    for (index_t b = 0; b < B; b++)
        for (index_t kh = 0; kh < d.NKV; kh++)
            for (index_t j = 0; j < Tk; j++)
                for (int i = 0; i < HS; i++) {
                    T dv_i = 0, dk_i = 0;
                    for (index_t h = kh * G; h < (kh + 1) * G; h++)
                        for (index_t t = 0; t < Tq; t++) {
                            const size_t pj = size_t(((b * NH + h) * Tq + t) * Tk + j),
                                         at = size_t((b * Tq + t) * C + h * HS + i);
                            dv_i = std::fma(p[pj], dout[at], dv_i);
                            dk_i = std::fma(dS[pj], q[at], dk_i);
                        }
                    g.dv[size_t((b * Tk + j) * Ck + kh * HS + i)] = dv_i;
                    g.dk[size_t((b * Tk + j) * Ck + kh * HS + i)] = dk_i * c;
                }
    return g;
}

template <class T>
void check_blocked_equals_plain(index_t B, index_t Tq, index_t Tk, const ops::attention_options& o) {
    const int HS = 8;
    const index_t NH = o.n_head, NKV = o.n_kv_head ? o.n_kv_head : o.n_head;
    const auto input = [&](const char* name, index_t rows, index_t heads) {
        return golden::hashfill<T>(name, {B, rows, heads * HS}, 1.f);
    };
    const plain_grads<T> want =
        attention_plain<T>(input("blk.q", Tq, NH).to_vector(), input("blk.k", Tk, NKV).to_vector(),
                           input("blk.v", Tk, NKV).to_vector(), input("blk.dy", Tq, NH).to_vector(), B, Tq, Tk, HS, o);
    const int before = max_threads();
    for (int n : {1, 2, 3}) {
        CAPTURE(n);
        set_threads(n);
        auto q = variable<T>::leaf(input("blk.q", Tq, NH), true), k = variable<T>::leaf(input("blk.k", Tk, NKV), true),
             v = variable<T>::leaf(input("blk.v", Tk, NKV), true);
        tape<T> tp;
        auto y = ag::attention(&tp, q, k, v, o);
        tp.backward(y, input("blk.dy", Tq, NH));
        CHECK(same_bits(y.value().to_vector(), want.out));
        CHECK(same_bits(q.grad().to_vector(), want.dq));
        CHECK(same_bits(k.grad().to_vector(), want.dk));
        CHECK(same_bits(v.grad().to_vector(), want.dv));
        // without a tape no probabilities are kept: each block's scores live in scratch
        tape<T>* none = nullptr;
        CHECK(same_bits(ag::attention(none, q, k, v, o).value().to_vector(), want.out));
    }
    set_threads(before);
}
}  // namespace

TEST_CASE("attention in blocks with causal skipping gives the bits of the plain full chains (several blocks; none)") {
    // 300 x 300 scores: three blocks of query rows and three of key rows (ops/attention.h).
    ops::attention_options o;
    o.n_head = 4, o.n_kv_head = 2, o.causal = true;
    SUBCASE("causal, float") { check_blocked_equals_plain<float>(1, 300, 300, o); }
    SUBCASE("causal with past 40 and padded keys, double") {
        o.key_lengths = {340, 211};
        check_blocked_equals_plain<double>(2, 300, 340, o);
    }
    SUBCASE("causal with a left-padding mask (a first query that sees nothing), float") {
        o.key_mask.assign(300, 1);
        for (int j = 0; j < 37; j++) o.key_mask[size_t(j)] = 0;
        check_blocked_equals_plain<float>(1, 300, 300, o);
    }
    SUBCASE("more queries than keys (past < 0: the first queries see nothing), float") {
        check_blocked_equals_plain<float>(1, 300, 260, o);
    }
    SUBCASE("keys no query sees (explicit past 0, 100 queries, 300 keys), float") {
        o.past = 0;
        check_blocked_equals_plain<float>(1, 100, 300, o);
    }
    SUBCASE("no mask (CLIP), float") {
        o.causal = false;
        check_blocked_equals_plain<float>(1, 300, 300, o);
    }
}

// ---------------------------------------------------------------------------------------------
// Error paths name the op and both shapes.

TEST_CASE("attention, rope and patch_embed reject mismatched shapes, naming the op and both shapes") {
    tape<float>* none = nullptr;
    ops::attention_options o;
    o.n_head = 4, o.n_kv_head = 2;
    auto q = random_leaf<float>({2, 3, 16}, 1), k = random_leaf<float>({2, 5, 12}, 2), v = random_leaf<float>({2, 5, 8}, 3);
    CHECK_THROWS_WITH_AS(ag::attention(none, q, k, k, o), doctest::Contains("attention: q [2,3,16] and k [2,5,12] do not match"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::attention(none, q, v, k, o), doctest::Contains("attention: k [2,5,8] and v [2,5,12] differ"),
                         aligngpt::error);
    o.n_kv_head = 3;
    CHECK_THROWS_WITH_AS(ag::attention(none, q, v, v, o), doctest::Contains("n_head 4 is not a multiple of n_kv_head 3"),
                         aligngpt::error);
    o.n_kv_head = 2, o.key_lengths = {5};
    CHECK_THROWS_WITH_AS(ag::attention(none, q, v, v, o), doctest::Contains("key_lengths has 1 entries for batch 2"),
                         aligngpt::error);

    const ag::rope_table tab(8);
    CHECK_THROWS_WITH_AS(ag::rope(none, random_leaf<float>({2, 3, 12}, 1), std::vector<std::int64_t>(6), tab),
                         doctest::Contains("rope: x [2,3,12] last dim is not a multiple of head size 8"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::rope(none, random_leaf<float>({2, 3, 16}, 1), std::vector<std::int64_t>(5), tab),
                         doctest::Contains("rope: x [2,3,16] has 6 rows but positions has shape [5]"), aligngpt::error);
    CHECK_THROWS_WITH_AS(ops::rope_scaling::from_name("yarn", 2.0), doctest::Contains("unsupported rope_scaling type 'yarn'"),
                         aligngpt::error);

    CHECK_THROWS_WITH_AS(ag::patch_embed(none, random_leaf<float>({1, 3, 28, 30}, 1), random_leaf<float>({4, 3, 14, 14}, 2)),
                         doctest::Contains("patch_embed: pixels [1,3,28,30] height and width are not multiples of the "
                                           "patch size 14 (weight [4,3,14,14])"),
                         aligngpt::error);
    CHECK_THROWS_WITH_AS(ag::patch_embed(none, random_leaf<float>({1, 2, 28, 28}, 1), random_leaf<float>({4, 3, 14, 14}, 2)),
                         doctest::Contains("patch_embed: pixels [1,2,28,28] [B, C, H, W] do not match weight [4,3,14,14]"),
                         aligngpt::error);
}

// ---------------------------------------------------------------------------------------------
// Parity with PyTorch / transformers 4.31 (fixtures: tests/tools/golden/ops_attention.py).
// Inputs are hashfill on both sides. Tolerance: torch.testing.assert_close's float32 defaults
// (rtol 1.3e-6, atol 1e-5), reported as close_ratio <= 1; the differences come from summation
// order (BLAS vs our in-order fma chains), exp/cos implementations and, for LLaMA, q.k/sqrt(HS)
// vs q.k*fl(1/sqrt(HS)).

namespace {
constexpr double RTOL = 1.3e-6, ATOL = 1e-5;

template <class F>
struct attn_result {
    std::vector<F> y, dq, dk, dv;
};

template <class F>
attn_result<F> run_attention(const tensor<F>& q, const tensor<F>& k, const tensor<F>& v, const tensor<F>& dy,
                             const ops::attention_options& o) {
    auto vq = variable<F>::leaf(q, true), vk = variable<F>::leaf(k, true), vv = variable<F>::leaf(v, true);
    tape<F> tp;
    auto y = ag::attention(&tp, vq, vk, vv, o);
    tp.backward(y, dy);
    return {y.value().to_vector(), vq.grad().to_vector(), vk.grad().to_vector(), vv.grad().to_vector()};
}

template <class To, class From>
tensor<To> cast(const tensor<From>& t) {
    tensor<To> out(t.shape());
    for (index_t i = 0; i < t.numel(); i++) out.data()[i] = To(t.data()[i]);
    return out;
}

#define CHECK_CLOSE(ours, fx, key)                                                                              \
    do {                                                                                                        \
        const std::string k_ = (key);                                                                           \
        const double r_ = golden::close_ratio(ours, (fx).get(k_), RTOL, ATOL);                                  \
        MESSAGE(k_ << ": close_ratio " << r_ << ", max_abs_diff " << golden::max_abs_diff(ours, (fx).get(k_))); \
        CHECK(r_ <= 1.0);                                                                                       \
    } while (0)
}  // namespace

TEST_CASE("attention matches an explicit PyTorch implementation of the same math (fp32 defaults; fp64 1e-12)") {
    const auto fx = golden::load("op_attn_math");
    for (const char* name : {"gqa_causal_pad", "left_pad_fully_masked", "clip_no_mask", "mqa_cross"}) {
        const std::string p = std::string(name) + ".";
        CAPTURE(p);
        const auto opts = fx.get<index_t>(p + "opts");
        const auto km = fx.get<index_t>(p + "key_mask");
        ops::attention_options o;
        o.n_head = int(opts[0]), o.n_kv_head = int(opts[1]), o.causal = opts[2] != 0, o.past = opts[3];
        o.scale = fx.get<double>(p + "scale")[0];
        o.key_mask.assign(km.begin(), km.end());
        const auto ys = fx.shape(p + "y"), ks = fx.shape(p + "dk");
        const auto q = golden::hashfill<float>("attn." + p + "q", ys, 1.f),
                   k = golden::hashfill<float>("attn." + p + "k", ks, 1.f),
                   v = golden::hashfill<float>("attn." + p + "v", ks, 1.f),
                   dy = golden::hashfill<float>("attn." + p + "dy", ys, 1.f);
        const auto r = run_attention(q, k, v, dy, o);
        CHECK_CLOSE(r.y, fx, p + "y");
        CHECK_CLOSE(r.dq, fx, p + "dq");
        CHECK_CLOSE(r.dk, fx, p + "dk");
        CHECK_CLOSE(r.dv, fx, p + "dv");
        // the same kernels in double on the same (float) inputs agree with torch float64 to rounding
        const auto r64 = run_attention(cast<double>(q), cast<double>(k), cast<double>(v), cast<double>(dy), o);
        const double d64 = std::max({golden::close_ratio(r64.y, fx.get<double>(p + "y64"), 1e-12, 1e-12),
                                     golden::close_ratio(r64.dq, fx.get<double>(p + "dq64"), 1e-12, 1e-12),
                                     golden::close_ratio(r64.dk, fx.get<double>(p + "dk64"), 1e-12, 1e-12),
                                     golden::close_ratio(r64.dv, fx.get<double>(p + "dv64"), 1e-12, 1e-12)});
        MESSAGE(p << " float64 close_ratio at rtol=atol=1e-12: " << d64);
        CHECK(d64 <= 1.0);
    }
}

TEST_CASE("attention composed as linear -> rope -> attention -> linear matches transformers 4.31 LlamaAttention") {
    const auto fx = golden::load("op_attn_llama");
    const index_t B = 2, S = 6, H = 32, NH = 4, NKV = 2, HS = 8;
    const auto lengths = fx.get<index_t>("key_lengths");
    for (const char* name : {"plain", "linear2"}) {
        const std::string p = std::string(name) + ".";
        CAPTURE(p);
        auto x = variable<float>::leaf(golden::hashfill<float>("llama_attn.x", {B, S, H}, 1.f), true);
        auto wq = variable<float>::leaf(golden::hashfill<float>("llama_attn.q_proj.weight", {NH * HS, H}, 0.2f), true);
        auto wk = variable<float>::leaf(golden::hashfill<float>("llama_attn.k_proj.weight", {NKV * HS, H}, 0.2f), true);
        auto wv = variable<float>::leaf(golden::hashfill<float>("llama_attn.v_proj.weight", {NKV * HS, H}, 0.2f), true);
        auto wo = variable<float>::leaf(golden::hashfill<float>("llama_attn.o_proj.weight", {H, NH * HS}, 0.2f), true);
        const ag::rope_table tab(int(HS), 10000,
                                 p == "linear2." ? ops::rope_scaling::from_name("linear", 2.0) : ops::rope_scaling{});
        std::vector<std::int64_t> pos;
        for (index_t b = 0; b < B; b++)
            for (index_t t = 0; t < S; t++) pos.push_back(t);
        ops::attention_options o;
        o.n_head = int(NH), o.n_kv_head = int(NKV), o.causal = true;
        o.key_lengths.assign(lengths.begin(), lengths.end());
        tape<float> tp;
        auto q = ag::rope(&tp, ag::linear(&tp, x, wq), pos, tab);
        auto k = ag::rope(&tp, ag::linear(&tp, x, wk), pos, tab);
        auto y = ag::linear(&tp, ag::attention(&tp, q, k, ag::linear(&tp, x, wv), o), wo);
        tp.backward(y, golden::hashfill<float>("llama_attn.dy", {B, S, H}, 1.f));
        CHECK_CLOSE(y.value().to_vector(), fx, p + "y");
        CHECK_CLOSE(x.grad().to_vector(), fx, p + "dx");
        CHECK_CLOSE(wq.grad().to_vector(), fx, p + "dWq");
        CHECK_CLOSE(wk.grad().to_vector(), fx, p + "dWk");
        CHECK_CLOSE(wv.grad().to_vector(), fx, p + "dWv");
        CHECK_CLOSE(wo.grad().to_vector(), fx, p + "dWo");
    }
}

TEST_CASE("a KV-cache decode step matches transformers 4.31 LlamaAttention with past_key_value, and our prefill bitwise") {
    const auto fx = golden::load("op_attn_llama");
    const index_t B = 2, S = 6, H = 32, NH = 4, NKV = 2, HS = 8;
    const auto x = golden::hashfill<float>("llama_attn.x", {B, S, H}, 1.f);
    auto W = [](const char* n, index_t rows) {
        return variable<float>::leaf(golden::hashfill<float>(std::string("llama_attn.") + n + "_proj.weight", {rows, 32}, 0.2f));
    };
    const auto wq = W("q", NH * HS), wk = W("k", NKV * HS), wv = W("v", NKV * HS), wo = W("o", H);
    const ag::rope_table tab(static_cast<int>(HS));
    ops::attention_options o;
    o.n_head = int(NH), o.n_kv_head = int(NKV), o.causal = true;
    const auto lengths = fx.get<index_t>("key_lengths");
    o.key_lengths.assign(lengths.begin(), lengths.end());
    tape<float>* none = nullptr;
    auto layer = [&](index_t t0) {  // queries t0..S-1 against keys 0..S-1
        std::vector<std::int64_t> pos_q, pos_k;
        for (index_t b = 0; b < B; b++) {
            for (index_t t = t0; t < S; t++) pos_q.push_back(t);
            for (index_t t = 0; t < S; t++) pos_k.push_back(t);
        }
        const auto xq = variable<float>::leaf(x.slice(1, t0, S)), xk = variable<float>::leaf(x);
        const auto q = ag::rope(none, ag::linear(none, xq, wq), pos_q, tab);
        const auto k = ag::rope(none, ag::linear(none, xk, wk), pos_k, tab);  // the cache: post-rope k, and v
        return ag::linear(none, ag::attention(none, q, k, ag::linear(none, xk, wv), o), wo).value();
    };
    const auto step = layer(S - 1).to_vector();
    CHECK_CLOSE(step, fx, std::string("decode.y"));
    CHECK(same_bits(step, layer(0).slice(1, S - 1, S).to_vector()));
}

TEST_CASE("attention composed with biased linears matches transformers 4.31 CLIPAttention (scale 0.25)") {
    const auto fx = golden::load("op_attn_clip");
    const index_t B = 2, S = 5, H = 32;
    auto x = variable<float>::leaf(golden::hashfill<float>("clip_attn.x", {B, S, H}, 1.f), true);
    std::map<std::string, variable<float>> w;
    for (const char* m : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
        const std::string n = std::string("clip_attn.") + m;
        w[std::string(m) + ".weight"] = variable<float>::leaf(golden::hashfill<float>(n + ".weight", {H, H}, 0.2f), true);
        w[std::string(m) + ".bias"] = variable<float>::leaf(golden::hashfill<float>(n + ".bias", {H}, 0.2f), true);
    }
    ops::attention_options o;
    o.n_head = 2;  // HS = 16, default scale 16^-0.5 = 0.25
    tape<float> tp;
    auto lin = [&](const variable<float>& in, const std::string& m) {
        return ag::linear(&tp, in, w[m + ".weight"], w[m + ".bias"]);
    };
    auto y = lin(ag::attention(&tp, lin(x, "q_proj"), lin(x, "k_proj"), lin(x, "v_proj"), o), "out_proj");
    tp.backward(y, golden::hashfill<float>("clip_attn.dy", {B, S, H}, 1.f));
    CHECK_CLOSE(y.value().to_vector(), fx, std::string("y"));
    CHECK_CLOSE(x.grad().to_vector(), fx, std::string("dx"));
    for (auto& [name, var] : w) CHECK_CLOSE(var.grad().to_vector(), fx, "d." + name);
}

TEST_CASE("attention at full width (HS=128, NH=2, T=600, causal) matches PyTorch: rows and float64 checksums") {
    const auto fx = golden::load("op_attn_wide");
    const index_t T = 600, C = 256;
    const auto q = golden::hashfill<float>("attn_wide.q", {1, T, C}, 1.f),
               k = golden::hashfill<float>("attn_wide.k", {1, T, C}, 1.f),
               v = golden::hashfill<float>("attn_wide.v", {1, T, C}, 1.f),
               dy = golden::hashfill<float>("attn_wide.dy", {1, T, C}, 1.f);
    ops::attention_options o;
    o.n_head = 2, o.causal = true;  // scale 128^-0.5
    const auto r = run_attention(q, k, v, dy, o);
    const auto w = golden::hashfill<float>("attn_wide.checksum", {1, T, C}, 1.f);
    const auto rows = fx.get<index_t>("rows");
    for (auto nv : {std::pair{"y", &r.y}, {"dq", &r.dq}, {"dk", &r.dk}, {"dv", &r.dv}}) {
        const auto name = nv.first;
        const auto vals = nv.second;
        CAPTURE(name);
        std::vector<float> sel;
        for (index_t t : rows) sel.insert(sel.end(), vals->begin() + t * C, vals->begin() + (t + 1) * C);
        CHECK_CLOSE(sel, fx, std::string(name));
        double cs = 0, abssum = 0;
        for (index_t i = 0; i < T * C; i++)
            cs += double((*vals)[size_t(i)]) * double(w.data()[i]), abssum += std::abs(double((*vals)[size_t(i)]));
        const double want = fx.get<double>(std::string(name) + ".checksum")[0],
                     want_abs = fx.get<double>(std::string(name) + ".abssum")[0];
        // the checksum sums 153600 signed terms: allow 1e-6 of the absolute sum (errors ~1e-7 each)
        MESSAGE(std::string(name) << ": checksum diff " << std::abs(cs - want) << " (abs sum " << want_abs << ")");
        CHECK(std::abs(cs - want) <= 1e-6 * want_abs);
        CHECK(std::abs(abssum - want_abs) <= 1e-6 * want_abs);
    }
}

TEST_CASE("rope matches transformers 4.31 LlamaRotaryEmbedding / apply_rotary_pos_emb (none, linear, llama3)") {
    const auto fx = golden::load("op_rope");
    const index_t B = 2, S = 5, NH = 3, HS = 16;
    const auto x0 = golden::hashfill<float>("rope.x", {B, S, NH * HS}, 1.f),
               dy = golden::hashfill<float>("rope.dy", {B, S, NH * HS}, 1.f);
    const std::map<std::string, ops::rope_table> tabs{
        {"plain", ops::rope_table(int(HS), 10000)},
        {"linear4", ops::rope_table(int(HS), 10000, ops::rope_scaling::from_name("linear", 4.0))},
        {"llama3", ops::rope_table(int(HS), 500000, ops::rope_scaling::from_name("llama3", 8.0, 1.0, 4.0, 8192))}};
    for (const auto& nt : tabs) {
        const auto& name = nt.first;
        const auto& tab = nt.second;
        CAPTURE(name);
        const auto p64 = fx.get<index_t>(name == "llama3" ? "llama3.pos" : "pos");
        const std::vector<std::int64_t> pos(p64.begin(), p64.end());
        auto x = variable<float>::leaf(x0, true);
        tape<float> tp;
        auto y = ag::rope(&tp, x, pos, tab);
        tp.backward(y, dy);
        CHECK(same_bits(tab.inv_freq, fx.get<float>(name + ".inv_freq")));
        CHECK_CLOSE(y.value().to_vector(), fx, name + ".y");
        CHECK_CLOSE(x.grad().to_vector(), fx, name + ".dx");
        // in place gives the same bits as out of place
        auto xi = x0.clone();
        ops::rope_forward(backend::cpu{}, xi.data(), xi.data(), pos.data(), B * S, int(NH), tab);
        CHECK(same_bits(xi.to_vector(), y.value().to_vector()));
    }
    SUBCASE("inv_freq tables at the models' sizes are bit-identical to transformers'") {
        CHECK(same_bits(ops::rope_table(128, 10000).inv_freq, fx.get<float>("inv_freq.128.1e4")));
        CHECK(same_bits(ops::rope_table(64, 10000).inv_freq, fx.get<float>("inv_freq.64.1e4")));
        CHECK(same_bits(ops::rope_table(128, 500000, ops::rope_scaling::from_name("llama3", 8.0, 1.0, 4.0, 8192)).inv_freq,
                        fx.get<float>("inv_freq.128.5e5.llama3")));
        CHECK(same_bits(ops::rope_table(128, 500000, ops::rope_scaling::from_name("llama3", 32.0, 1.0, 4.0, 8192)).inv_freq,
                        fx.get<float>("inv_freq.128.5e5.llama3_32")));
    }
}

TEST_CASE("patch_embed matches transformers 4.31 CLIPVisionEmbeddings.patch_embedding (square and 28x42)") {
    const auto fx = golden::load("op_patch_embed");
    const auto w0 = golden::hashfill<float>("patch.weight", {6, 3, 14, 14}, 0.05f);
    for (auto ns : {std::pair<std::string, shape_t>{"square", {2, 3, 28, 28}}, {"wide", {1, 3, 28, 42}}}) {
        const auto name = ns.first;
        const auto shape = ns.second;
        CAPTURE(name);
        auto px = variable<float>::leaf(golden::hashfill<float>("patch." + name + ".px", shape, 1.f), true);
        auto w = variable<float>::leaf(w0, true);
        tape<float> tp;
        auto y = ag::patch_embed(&tp, px, w);
        CHECK(y.shape() == fx.shape(name + ".y"));
        tp.backward(y, golden::hashfill<float>("patch." + name + ".dy", y.shape(), 1.f));
        CHECK_CLOSE(y.value().to_vector(), fx, name + ".y");
        CHECK_CLOSE(px.grad().to_vector(), fx, name + ".dpx");
        CHECK_CLOSE(w.grad().to_vector(), fx, name + ".dw");
    }
}

}  // namespace test_attention
