#pragma once
// The work items of backend::cuda's exact mode: what one GPU thread computes, written once for the
// host and the device (issue #13; docs/design.md "The deterministic contract").
//
// Each function is one thread's share of a kernel of ops/, in the same order of operations as the
// CPU kernel there (where the CPU kernel is a plain loop over such shares, the function is written
// once in ops/, namespace ops::item, and named here with a using-declaration): an elementwise op is one element, a row op (a norm, a softmax) is one row with
// its sums left to right, a column sum is one column with n ascending, a product is one output
// element with its fma chain over k ascending. backend::cuda launches one thread per work item
// (src/cuda/kernels.cu); nothing is split or reduced across threads, so no atomics, and the bits
// are those of backend::cpu:
//
//   for i in 0 .. items-1 (any order, any thread):  item(i, args...)      ==  ops::<op>(cpu, args...)
//
// tests/test_cuda_exact.cpp runs every work item on the host over its whole index range and
// compares with the CPU kernel bit for bit, so the order is checked on every CI run, GPU or not;
// the GPU test (tests/cuda/) then only has to show that the device executes the same IEEE
// operations (nvcc --fmad=false, IEEE division and square root, our exp/log/erf).
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "aligngpt/config.h"
#include "aligngpt/half.h"
#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/batched_matvec.h"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/ops/erf.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/gemm.h"
#include "aligngpt/ops/ieee.h"
#include "aligngpt/ops/l2_normalize.h"
#include "aligngpt/ops/log.h"
#include "aligngpt/ops/masked_mean.h"
#include "aligngpt/ops/reduce.h"

namespace aligngpt::backend::exact {

using ops::fma_ieee;
using ops::sqrt_ieee;

// --- elementwise: item i -----------------------------------------------------------------------

template <class T>
ALIGNGPT_HD inline void add_forward(index_t i, T* y, const T* a, const T* b) {
    y[i] = a[i] + b[i];
}
template <class T>
ALIGNGPT_HD inline void add_backward(index_t i, T* da, T* db, const T* dy) {
    if (da) da[i] += dy[i];
    if (db) db[i] += dy[i];
}
template <class T>
ALIGNGPT_HD inline void mul_forward(index_t i, T* y, const T* a, const T* b) {
    y[i] = a[i] * b[i];
}
template <class T>
ALIGNGPT_HD inline void mul_backward(index_t i, T* da, T* db, const T* dy, const T* a, const T* b) {
    if (da) da[i] += dy[i] * b[i];
    if (db) db[i] += dy[i] * a[i];
}
template <class T>
ALIGNGPT_HD inline void scale_forward(index_t i, T* y, const T* x, T s) {
    y[i] = s * x[i];
}
template <class T>
ALIGNGPT_HD inline void scale_backward(index_t i, T* dx, const T* dy, T s) {
    dx[i] += s * dy[i];
}
/// Item i of the N x C elements.
template <class T>
ALIGNGPT_HD inline void add_row_forward(index_t i, T* y, const T* x, const T* r, index_t C) {
    y[i] = x[i] + r[i % C];
}
/// Item c: the bias gradient of column c, n ascending (dx is add_backward's).
template <class T>
ALIGNGPT_HD inline void add_row_backward_column(index_t c, T* dr, const T* dy, index_t N, index_t C) {
    T acc = 0;
    for (index_t n = 0; n < N; n++) acc += dy[n * C + c];
    dr[c] += acc;
}
/// dst[i] += src[i], the tape's gradient accumulation.
template <class T>
ALIGNGPT_HD inline void accumulate(index_t i, T* dst, const T* src) {
    dst[i] += src[i];
}

// --- activations: item i (the scalar helpers of ops/activations.h, shared with the CPU) ----------

template <class T>
ALIGNGPT_HD inline void gelu_forward(index_t i, T* y, const T* x) {
    y[i] = ops::gelu_scalar(x[i]);
}
template <class T>
ALIGNGPT_HD inline void gelu_backward(index_t i, T* dx, const T* dy, const T* x) {
    dx[i] += dy[i] * ops::gelu_grad_scalar(x[i]);
}
/// x sigmoid(a x), as ops/kernels/activations.inc's x_sigmoid_ax: e = exp(-(a x)), then x / (1 + e).
template <class T>
ALIGNGPT_HD inline void x_sigmoid_ax(index_t i, T* y, const T* x, T a) {
    const T e = ops::exp_of(T(-(a * x[i])));
    y[i] = x[i] * (T(1) / (T(1) + e));
}
template <class T>
ALIGNGPT_HD inline void quick_gelu_backward(index_t i, T* dx, const T* dy, const T* x) {
    const T s = ops::sigmoid_scalar(T(T(1.702) * x[i]));
    dx[i] += dy[i] * (s + T(1.702) * x[i] * s * (T(1) - s));
}
template <class T>
ALIGNGPT_HD inline void silu_backward(index_t i, T* dx, const T* dy, const T* x) {
    dx[i] += dy[i] * ops::silu_grad_scalar(x[i]);
}
template <class T>
ALIGNGPT_HD inline void swiglu_forward(index_t i, T* y, const T* g, const T* u) {
    y[i] = (g[i] * ops::sigmoid_scalar(g[i])) * u[i];
}
template <class T>
ALIGNGPT_HD inline void swiglu_backward(index_t i, T* dg, T* du, const T* dy, const T* g, const T* u) {
    if (dg) dg[i] += dy[i] * u[i] * ops::silu_grad_scalar(g[i]);
    if (du) du[i] += dy[i] * (g[i] * ops::sigmoid_scalar(g[i]));
}

// --- norms and softmax: item n is row n, sums left to right ------------------------------------

template <class T>
ALIGNGPT_HD inline void rms_norm_forward_row(index_t n, T* y, T* rstd, const T* x, const T* g, index_t C, T eps) {
    const T* x_n = x + n * C;
    T sum_sq = 0;
    for (index_t i = 0; i < C; i++) sum_sq += x_n[i] * x_n[i];
    const T r = T(1) / sqrt_ieee(T(sum_sq / T(C) + eps));
    for (index_t i = 0; i < C; i++) y[n * C + i] = g[i] * (x_n[i] * r);
    rstd[n] = r;
}
template <class T>
ALIGNGPT_HD inline void rms_norm_backward_row(index_t n, T* dx, const T* dy, const T* x, const T* g, const T* rstd, index_t C) {
    const T r = rstd[n];
    T dot = 0;
    for (index_t j = 0; j < C; j++) dot += g[j] * dy[n * C + j] * (x[n * C + j] * r);
    const T mean_dot = dot / T(C);
    for (index_t i = 0; i < C; i++) dx[n * C + i] += r * (g[i] * dy[n * C + i] - (x[n * C + i] * r) * mean_dot);
}
/// Item i: the weight gradient of channel i, n ascending.
template <class T>
ALIGNGPT_HD inline void rms_norm_backward_channel(index_t i, T* dg, const T* dy, const T* x, const T* rstd, index_t N,
                                                  index_t C) {
    T acc = 0;
    for (index_t n = 0; n < N; n++) acc += dy[n * C + i] * (x[n * C + i] * rstd[n]);
    dg[i] += acc;
}

template <class T>
ALIGNGPT_HD inline void layer_norm_forward_row(index_t n, T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t C,
                                               T eps) {
    const T* x_n = x + n * C;
    T sum = 0;
    for (index_t i = 0; i < C; i++) sum += x_n[i];
    const T mu = sum / T(C);
    T sum_sq = 0;
    for (index_t i = 0; i < C; i++) sum_sq += (x_n[i] - mu) * (x_n[i] - mu);
    const T r = T(1) / sqrt_ieee(T(sum_sq / T(C) + eps));
    for (index_t i = 0; i < C; i++) y[n * C + i] = w[i] * ((x_n[i] - mu) * r) + (b ? b[i] : T(0));
    mean[n] = mu;
    rstd[n] = r;
}
template <class T>
ALIGNGPT_HD inline void layer_norm_backward_row(index_t n, T* dx, const T* dy, const T* x, const T* w, const T* mean,
                                                const T* rstd, index_t C) {
    const T mu = mean[n], r = rstd[n];
    T sum_gy = 0, sum_gy_xhat = 0;
    for (index_t j = 0; j < C; j++) {
        const T gy = w[j] * dy[n * C + j];
        sum_gy += gy;
        sum_gy_xhat += gy * ((x[n * C + j] - mu) * r);
    }
    const T m1 = sum_gy / T(C), m2 = sum_gy_xhat / T(C);
    for (index_t i = 0; i < C; i++) {
        const T xhat = (x[n * C + i] - mu) * r;
        dx[n * C + i] += r * (w[i] * dy[n * C + i] - m1 - xhat * m2);
    }
}
/// Item i: the weight and bias gradients of channel i, n ascending (either may be null).
template <class T>
ALIGNGPT_HD inline void layer_norm_backward_channel(index_t i, T* dw, T* db, const T* dy, const T* x, const T* mean,
                                                    const T* rstd, index_t N, index_t C) {
    T acc_w = 0, acc_b = 0;
    for (index_t n = 0; n < N; n++) {
        acc_w += dy[n * C + i] * ((x[n * C + i] - mean[n]) * rstd[n]);
        acc_b += dy[n * C + i];
    }
    if (dw) dw[i] += acc_w;
    if (db) db[i] += acc_b;
}

template <class T>
ALIGNGPT_HD inline void softmax_forward_row(index_t n, T* p, const T* x, index_t C) {
    const T* x_n = x + n * C;
    T* p_n = p + n * C;
    T m = x_n[0];
    for (index_t i = 1; i < C; i++) m = x_n[i] > m ? x_n[i] : m;
    for (index_t i = 0; i < C; i++) p_n[i] = ops::exp_of(T(x_n[i] - m));
    T s = 0;
    for (index_t i = 0; i < C; i++) s += p_n[i];
    for (index_t i = 0; i < C; i++) p_n[i] /= s;
}
template <class T>
ALIGNGPT_HD inline void softmax_backward_row(index_t n, T* dx, const T* dy, const T* p, index_t C) {
    T dot = 0;
    for (index_t j = 0; j < C; j++) dot += dy[n * C + j] * p[n * C + j];
    for (index_t i = 0; i < C; i++) dx[n * C + i] += p[n * C + i] * (dy[n * C + i] - dot);
}

using ops::item::l2_normalize_backward_row;  // ops/l2_normalize.h: the CPU kernel's rows
using ops::item::l2_normalize_forward_row;

// --- reductions and gathers ------------------------------------------------------------------

using ops::item::sum_forward;  // ops/reduce.h
/// Item e: element e of dx (outer, D, inner).
template <class T>
ALIGNGPT_HD inline void sum_backward(index_t e, T* dx, const T* dy, index_t D, index_t inner, bool mean) {
    const index_t o = e / (D * inner), i = e % inner;
    dx[e] += mean ? dy[o * inner + i] / T(D) : dy[o * inner + i];
}

/// Item e of the Tn x C outputs: a copy of W[ids[t], c].
template <class T>
ALIGNGPT_HD inline void embedding_forward(index_t e, T* y, const T* W, const std::int64_t* ids, index_t C) {
    const index_t t = e / C, c = e % C;
    y[e] = W[ids[t] * C + c];
}
/// Item (group, c): row v = ids[order[start[g]]] of dW gathers its tokens in increasing position,
/// as the CPU kernel does (order: positions stably sorted by id; start: each id's first index).
template <class T>
ALIGNGPT_HD inline void embedding_backward(index_t gc, T* dW, const T* dy, const std::int64_t* ids, const index_t* order,
                                           const index_t* start, index_t C, std::int64_t padding_idx) {
    const index_t g = gc / C, c = gc % C;
    const std::int64_t v = ids[order[start[g]]];
    if (v == padding_idx) return;
    for (index_t k = start[g]; k < start[g + 1]; k++) dW[v * C + c] += dy[order[k] * C + c];
}

/// Item (o, j, i) of y's block: y[o, y_off + j, i] (op)= x[o, x_off + j, i].
template <class T>
ALIGNGPT_HD inline void copy_block(index_t e, T* y, index_t Dy, index_t y_off, const T* x, index_t Dx, index_t x_off, index_t Dn,
                                   index_t inner, bool accumulate) {
    const index_t i = e % inner, j = (e / inner) % Dn, o = e / (inner * Dn);
    T* dst = y + (o * Dy + y_off + j) * inner + i;
    const T src = x[(o * Dx + x_off + j) * inner + i];
    *dst = accumulate ? *dst + src : src;
}
/// Item e of y (P, Bn, M, A, Q): y[p, j, m, i, q] (op)= x[p, i, m, j, q].
template <class T>
ALIGNGPT_HD inline void transpose_copy(index_t e, T* y, const T* x, index_t A, index_t M, index_t Bn, index_t Q,
                                       bool accumulate) {
    const index_t q = e % Q, i = (e / Q) % A, m = (e / (Q * A)) % M, j = (e / (Q * A * M)) % Bn, p = e / (Q * A * M * Bn);
    const T src = x[(((p * A + i) * M + m) * Bn + j) * Q + q];
    y[e] = accumulate ? y[e] + src : src;
}

using ops::item::masked_mean_forward;  // ops/masked_mean.h
/// Item e of dx (B, T, H).
template <class T>
ALIGNGPT_HD inline void masked_mean_backward(index_t e, T* dx, const T* dy, const std::uint8_t* mask, const T* denom, index_t Tn,
                                             index_t H) {
    const index_t h = e % H, bt = e / H, b = bt / Tn;
    if (mask[bt]) dx[e] += dy[b * H + h] / denom[b];
}

using ops::item::batched_matvec_backward_vector;  // ops/batched_matvec.h
using ops::item::batched_matvec_forward;
/// Item e of dM (B, J, H).
template <class T>
ALIGNGPT_HD inline void batched_matvec_backward_matrix(index_t e, T* dM, const T* dy, const T* v, index_t J, index_t H) {
    const index_t h = e % H, bj = e / H, b = bj / J;
    dM[e] += dy[bj] * v[b * H + h];
}

// --- attention (ops/attention.h): the products are gemm calls; these are the row passes ------------

/// ops::attention_dims::visible with the masks in memory the kernel can read.
struct attention_mask {
    bool causal = false;
    index_t past = 0, Tk = 0;
    const index_t* key_lengths = nullptr;    ///< [B] or null
    const std::uint8_t* key_mask = nullptr;  ///< [B*Tk] or null
    ALIGNGPT_HD bool visible(index_t b, index_t t, index_t j) const {
        if (causal && j > past + t) return false;
        if (key_lengths && j >= key_lengths[b]) return false;
        if (key_mask && !key_mask[b * Tk + j]) return false;
        return true;
    }
};

/// Query row r = (b, h, t): passes 1 (scale, mask, max) to 3 (normalise) on att_t = q_t . k_j.
template <class T>
ALIGNGPT_HD inline void attention_softmax_row(index_t r, T* att, index_t NH, index_t Tq, index_t Tk, T scale, attention_mask m) {
    const index_t b = r / (NH * Tq), t = r % Tq;
    T* att_t = att + r * Tk;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T maxval = neg_inf;
    bool any = false;
    for (index_t j = 0; j < Tk; j++) {
        if (!m.visible(b, t, j)) {
            att_t[j] = neg_inf;
            continue;
        }
        att_t[j] *= scale;
        maxval = maxval < att_t[j] ? att_t[j] : maxval;  // std::max's rule
        any = true;
    }
    if (!any) {
        for (index_t j = 0; j < Tk; j++) att_t[j] = T(0);
        return;
    }
    for (index_t j = 0; j < Tk; j++) att_t[j] = ops::exp_of(T(att_t[j] - maxval));
    T sum = 0;
    for (index_t j = 0; j < Tk; j++) sum += att_t[j];
    for (index_t j = 0; j < Tk; j++) att_t[j] /= sum;
}
/// Query row r of the softmax backward, in place on dS (ops/kernels/attention.inc).
template <class T>
ALIGNGPT_HD inline void attention_softmax_backward_row(index_t r, T* dS, const T* att, index_t NH, index_t Tq, index_t Tk,
                                                       attention_mask m) {
    const index_t b = r / (NH * Tq), t = r % Tq;
    T* dS_t = dS + r * Tk;
    const T* att_t = att + r * Tk;
    T rowdot = 0;
    for (index_t j = 0; j < Tk; j++)
        if (m.visible(b, t, j)) rowdot = fma_ieee(dS_t[j], att_t[j], rowdot);
    for (index_t j = 0; j < Tk; j++) dS_t[j] = m.visible(b, t, j) ? att_t[j] * (dS_t[j] - rowdot) : T(0);
}
/// Item (t, i) of a rows x HS product added into rows of stride ld: dst[t, i] += acc[t, i] (* scale).
template <class T>
ALIGNGPT_HD inline void add_rows(index_t e, T* dst, index_t ld, const T* acc, index_t HS, T scale, bool scaled) {
    const index_t t = e / HS, i = e % HS;
    dst[t * ld + i] += scaled ? acc[e] * scale : acc[e];
}

// --- rope (ops/rope.h): cos and sin come from the host's table, [N, HS/2] -------------------------

/// Item (n, head, i < HS/2): the pair (i, i + HS/2) of one head of row n.
template <class T>
ALIGNGPT_HD inline void rope_forward(index_t e, T* y, const T* x, const T* c, const T* s, index_t NH, index_t HS) {
    const index_t h = HS / 2, i = e % h, hd = (e / h) % NH, n = e / (h * NH);
    const index_t a = n * NH * HS + hd * HS + i, b = a + h;
    const T ci = c[n * h + i], si = s[n * h + i];
    const T xa = x[a], xb = x[b];
    const T ya = xa * ci + (-xb) * si;
    const T yb = xb * ci + xa * si;
    y[a] = ya;
    y[b] = yb;
}
template <class T>
ALIGNGPT_HD inline void rope_backward(index_t e, T* dx, const T* dy, const T* c, const T* s, index_t NH, index_t HS) {
    const index_t h = HS / 2, i = e % h, hd = (e / h) % NH, n = e / (h * NH);
    const index_t a = n * NH * HS + hd * HS + i, b = a + h;
    const T ci = c[n * h + i], si = s[n * h + i];
    dx[a] += dy[a] * ci + dy[b] * si;
    dx[b] += dy[b] * ci - dy[a] * si;
}

// --- cross-entropy (ops/cross_entropy.h) ---------------------------------------------------------

using ops::item::cross_entropy_grad;  // ops/cross_entropy.h: the CPU kernel's items
using ops::item::cross_entropy_loss;
using ops::item::cross_entropy_row;

// --- patch embedding (ops/patch_embed.h): the product is a gemm; these are its gather/scatter -----

/// Index into pixels (B, C, H, W) of element e of cols (B*patches, C*P*P).
ALIGNGPT_HD inline index_t patch_pixel(index_t e, index_t C, index_t H, index_t W, index_t P) {
    const index_t K = C * P * P, GW = W / P, NP = (H / P) * GW;
    const index_t r = e / K, k = e % K, b = r / NP, row = (r % NP) / GW, col = (r % NP) % GW;
    const index_t c = k / (P * P), kh = (k / P) % P, kw = k % P;
    return ((b * C + c) * H + row * P + kh) * W + col * P + kw;
}
template <class T>
ALIGNGPT_HD inline void patch_gather(index_t e, T* cols, const T* pixels, index_t C, index_t H, index_t W, index_t P) {
    cols[e] = pixels[patch_pixel(e, C, H, W, P)];
}
/// Patches do not overlap (stride == kernel): each pixel gets one term.
template <class T>
ALIGNGPT_HD inline void patch_scatter_add(index_t e, T* dpixels, const T* dcols, index_t C, index_t H, index_t W, index_t P) {
    dpixels[patch_pixel(e, C, H, W, P)] += dcols[e];
}

// --- products ----------------------------------------------------------------------------------

/// Element (i, j) of ops::gemm: c0, then fma over k ascending (gemm.h's definition).
template <class T>
ALIGNGPT_HD inline void gemm_element(index_t i, index_t j, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B,
                                     index_t rs_b, index_t cs_b, T* C, index_t ldc, ops::gemm_init init, const T* bias) {
    T acc = init == ops::gemm_init::zero ? T(0) : init == ops::gemm_init::bias ? bias[j] : C[i * ldc + j];
    for (index_t k = 0; k < K; k++) acc = fma_ieee(A[i * rs_a + k * cs_a], B[k * rs_b + j * cs_b], acc);
    C[i * ldc + j] = acc;
}
/// Storage bits of bf16 or f16 (the tag S), widened exactly (half.h).
template <class S>
ALIGNGPT_HD inline float widen_bits(std::uint16_t b) {
    static_assert(std::is_same_v<S, bf16> || std::is_same_v<S, f16>, "widen_bits: S is bf16 or f16");
    if constexpr (std::is_same_v<S, bf16>)
        return widen_bf16_bits(b);
    else
        return widen_f16_bits(b);
}
/// Element e = (i, j) of ops::linear_packed (ops/packed.h): bias[j] or +0, then fma over k
/// ascending with the widened W[j, k], read from the panels' bits (element (j, k) at
/// (j / 32) * K * 32 + k * 32 + j % 32).
template <class S>
ALIGNGPT_HD inline void linear_packed_element(index_t e, float* Y, const float* X, const std::uint16_t* panels, const float* bias,
                                              index_t N, index_t K) {
    constexpr index_t pw = 32;  // ops::packed_weight<S>::panel_width
    const index_t i = e / N, j = e % N;
    const std::uint16_t* w = panels + (j / pw) * K * pw + j % pw;
    float acc = bias ? bias[j] : 0.0f;
    for (index_t k = 0; k < K; k++) acc = fma_ieee(X[i * K + k], widen_bits<S>(w[k * pw]), acc);
    Y[i * N + j] = acc;
}
/// Element e = (j, k) of ops::packed_unpack: W[j, k] widened, row-major [N, K].
template <class S>
ALIGNGPT_HD inline void packed_unpack_element(index_t e, float* W, const std::uint16_t* panels, index_t K) {
    constexpr index_t pw = 32;
    const index_t j = e / K, k = e % K;
    W[e] = widen_bits<S>(panels[(j / pw) * K * pw + k * pw + j % pw]);
}
/// Item n of linear_backward's bias gradient: m ascending from the value already in db.
template <class T>
ALIGNGPT_HD inline void linear_bias_grad(index_t n, T* db, const T* dY, index_t M, index_t N) {
    T acc = db[n];
    for (index_t m = 0; m < M; m++) acc += dY[m * N + n];
    db[n] = acc;
}

}  // namespace aligngpt::backend::exact
