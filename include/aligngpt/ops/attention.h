#pragma once
// Scaled dot-product attention, multi-head with grouped-query attention (Vaswani et al. 2017, eq. 1;
// GQA: Ainslie et al. 2023), in llm.c's four named passes. Used by CLIP (no mask) and LLaMA (causal,
// optional key padding, KV cache).
//
//   head h reads kv head g(h) = h / (NH/NKV)                         NH % NKV == 0
//   s_tj  = c * (q_t . k_j)         for keys j visible to query t    pass 1 (and row max m_t)
//   e_tj  = exp(s_tj - m_t),  z_t = sum_j e_tj   (j ascending)       pass 2
//   p_tj  = e_tj / z_t,  p_tj = 0 exactly for masked keys            pass 3   saved: att (B, NH, T, Tk)
//   o_t   = sum_j p_tj v_j          (j ascending)                    pass 4
//
// Visibility: query t sits at absolute position past + t, keys at 0..Tk-1. With causal, key j is
// visible iff j <= past + t; past = -1 means Tk - T (HF's mask with a KV cache: a decode step with
// T = 1 sees every cached key). A key padding mask (valid key count per batch row, or a [B, Tk] 0/1
// mask) hides keys in every query row of that batch row.
// A fully masked row gives p = 0, o = 0 and zero gradients. PyTorch eager with an additive
// finfo.min mask would give a uniform row (mean of v) there instead; such rows only occur at padded
// queries, whose outputs are never used, and zeros keep them from leaking into anything.
//
// The scale c multiplies the score after the dot product. CLIP computes (q*c).k with c = 0.125;
// scaling by a power of two is exact, so c*(q.k) is the same value for the same summation order (only
// BLAS's order differs). LLaMA computes (q.k) / sqrt(HS): we multiply by fl(1/sqrt(HS)) instead,
// which can differ from PyTorch by one rounding of s (<= 1 ulp before the exp).
//
//   ops::attention_options o;  o.n_head = 32;  o.n_kv_head = 8;  o.causal = true;
//   auto y = ag::attention(&tp, q, k, v, o);          // q [B,T,32*128], k, v [B,Tk,8*128]
//
// Backward, with dO the upstream gradient (o_t = sum_j p_tj v_j, p_t = softmax(s_t), s_tj = c q_t.k_j;
// the softmax Jacobian dp_tj/ds_tk = p_tj (delta_jk - p_tk) gives dS below):
//   dP_tj = dO_t . v_j                     dS_tj = p_tj (dP_tj - sum_j' dP_tj' p_tj')   (softmax)
//   dq_t += c * sum_j dS_tj k_j            (j ascending)
//   dv_j += sum_{h in group(g)} sum_t p_tj dO_t        dk_j += c * sum_{h in group} sum_t dS_tj q_t
// The kv sums run over the group's query heads in ascending order, then t ascending, in one fma
// chain per element.
//
// Shapes: q, dq, out, dout (B, T, NH*HS)   k, v, dk, dv (B, Tk, NKV*HS)   att (B, NH, T, Tk)
// Inference may read the first Tk rows of larger k, v storage (B, kv_rows, NKV*HS): a KV cache
// allocated once for the whole context (options.n_keys = its length).
// Reproducibility: each dot product is one fma chain in index order; threads split only the rows
// they write ((b, h, t) query rows in forward and for dq, (b, g, j) key rows for dk and dv). No
// atomics, no reductions across threads: the bits do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"
#include "aligngpt/ops/isa.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/gemm.h"

namespace aligngpt::ops {

struct attention_options {
    int n_head = 1;                      ///< NH query heads
    int n_kv_head = 0;                   ///< NKV kv heads; 0 means NH (no grouping)
    double scale = 0;                    ///< c, multiplies q.k; 0 means HS^-0.5
    bool causal = false;                 ///< key j visible to query t iff j <= past + t
    index_t past = -1;                   ///< absolute position of query 0; -1 means Tk - T
    std::vector<index_t> key_lengths;    ///< optional, [B]: keys j >= key_lengths[b] are masked
    std::vector<std::uint8_t> key_mask;  ///< optional, [B*Tk]: 0 masks key j of batch row b
    index_t n_keys = -1;                 ///< keys used: rows 0..n_keys-1 of k and v; -1 means all
                                         ///< (a KV cache passes its storage and its length)
};

/// Sizes of one attention call, with the options resolved (NKV, scale, past) and checked.
struct attention_dims {
    index_t B, T, Tk;
    index_t kv_rows;  ///< rows per batch item in the k and v storage (>= Tk; more in a KV cache)
    int NH, NKV, HS;
    double scale;
    index_t past;
    attention_dims(index_t B_, index_t T_, index_t Tk_, int HS_, const attention_options& o)
        : B(B_),
          T(T_),
          Tk(Tk_),
          kv_rows(Tk_),
          NH(o.n_head),
          NKV(o.n_kv_head ? o.n_kv_head : o.n_head),
          HS(HS_),
          scale(o.scale != 0 ? o.scale : 1.0 / std::sqrt(double(HS_))),
          past(o.past < 0 ? Tk_ - T_ : o.past) {
        ALIGNGPT_CHECK(B >= 0 && T >= 0 && Tk >= 0 && HS > 0, "attention: bad sizes B=", B, " T=", T, " Tk=", Tk, " HS=", HS);
        ALIGNGPT_CHECK(NH > 0 && NKV > 0 && NH % NKV == 0, "attention: n_head ", NH, " is not a multiple of n_kv_head ", NKV);
        ALIGNGPT_CHECK(o.key_lengths.empty() || index_t(o.key_lengths.size()) == B, "attention: key_lengths has ",
                       o.key_lengths.size(), " entries for batch ", B);
        for (index_t len : o.key_lengths)
            ALIGNGPT_CHECK(0 <= len && len <= Tk, "attention: key length ", len, " outside [0, ", Tk, "]");
        ALIGNGPT_CHECK(o.key_mask.empty() || index_t(o.key_mask.size()) == B * Tk, "attention: key_mask has ", o.key_mask.size(),
                       " entries for [B, Tk] = [", B, ",", Tk, "]");
    }
    /// Is key j visible to query t of batch row b?
    bool visible(const attention_options& o, index_t b, index_t t, index_t j) const {
        if (o.causal && j > past + t) return false;
        if (!o.key_lengths.empty() && j >= o.key_lengths[size_t(b)]) return false;
        if (!o.key_mask.empty() && !o.key_mask[size_t(b * Tk + j)]) return false;
        return true;
    }
};

}  // namespace aligngpt::ops

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/attention.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

/// The softmax backward of query rows [r0, r1) in the (b, h, t) numbering (kernels/attention.inc), in
/// place on dS; dS and att point at row r0.
template <class T>
void attention_softmax_backward(const backend::cpu& be, T* dS, const T* att, const attention_dims& d, const attention_options& o,
                                index_t r0, index_t r1) {
    ALIGNGPT_ISA_DISPATCH(attention_softmax_backward<T>, be, dS, att, d, o, r0, r1)
}

/// Scores per block of heads in attention_forward: the heads are taken a few at a time, every pass
/// done on a block before the next, so that its scores stay in the cache between passes (a head of
/// 641 x 641 scores is 1.6 MB; all heads at once streamed 26 MB through memory in every pass). Only
/// the order of independent rows changes.
inline constexpr index_t attention_block_bytes = index_t(1) << 20;

// T is the scalar type (float or double); Tq is the number of queries (d.T).
template <class T>
void attention_forward(const backend::cpu& be, T* out, T* att, const T* q, const T* k, const T* v, const attention_dims& d,
                       const attention_options& o) {
    const index_t Tq = d.T, Tk = d.Tk, NH = d.NH, HS = d.HS, G = d.NH / d.NKV;
    const index_t C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T scale = T(d.scale);
    const index_t heads = d.B * NH;
    const index_t per_block = std::max<index_t>(1, attention_block_bytes / std::max<index_t>(1, Tq * Tk * index_t(sizeof(T))));
    for (index_t h0 = 0; h0 < heads; h0 += per_block) {
        const index_t h1 = std::min(heads, h0 + per_block);
        // pass 1 as one product per (b, h): att_bh[t, j] = q_t . k_j, each a fma chain over i ascending
        // from 0 (gemm.h), i.e. the same bits as the plain dot product; masked entries are dropped below.
        for (index_t bh = h0; bh < h1; bh++) {
            const index_t b = bh / NH, h = bh % NH;
            gemm(be, Tq, Tk, HS, q + b * Tq * C + h * HS, C, index_t(1), k + b * d.kv_rows * Ck + (h / G) * HS, index_t(1), Ck,
                 att + bh * Tq * Tk, Tk, gemm_init::zero);
        }

        ALIGNGPT_OMP_FOR  // each thread owns query rows (b, h, t)
            for (index_t r = h0 * Tq; r < h1 * Tq; r++) {
            const index_t b = r / (NH * Tq), t = r % Tq;
            T* att_t = att + r * Tk;

            // pass 1 (rest): scale, mask (-inf for now), row max over visible keys
            T maxval = -std::numeric_limits<T>::infinity();
            bool any = false;
            for (index_t j = 0; j < Tk; j++) {
                if (!d.visible(o, b, t, j)) {
                    att_t[j] = -std::numeric_limits<T>::infinity();
                    continue;
                }
                att_t[j] *= scale;
                maxval = std::max(maxval, att_t[j]);
                any = true;
            }
            if (!any) {  // fully masked: p = 0, so o = 0
                std::fill(att_t, att_t + Tk, T(0));
                continue;
            }

            // pass 2: exponentials (vectorised, ops/exp.h; a masked key gives e^-inf = +0) and their
            // sum, j ascending (adding +0 leaves the sum's bits as they were)
            exp_shifted(att_t, att_t, maxval, Tk);
            T sum = 0;
            for (index_t j = 0; j < Tk; j++) sum += att_t[j];
            // pass 3: normalise (a masked entry stays 0: +0 / sum, with 1 <= sum <= Tk)
            for (index_t j = 0; j < Tk; j++) att_t[j] /= sum;
        }

        // pass 4 as one product per (b, h): out_t[i] = sum_j p_tj v_j[i], one fma chain over j
        // ascending from 0; a masked p_tj is exactly 0 and leaves the chain unchanged.
        for (index_t bh = h0; bh < h1; bh++) {
            const index_t b = bh / NH, h = bh % NH;
            gemm(be, Tq, HS, Tk, att + bh * Tq * Tk, Tk, index_t(1), v + b * d.kv_rows * Ck + (h / G) * HS, Ck, index_t(1),
                 out + b * Tq * C + h * HS, C, gemm_init::zero);
        }
    }
}

/// Accumulates into dq, dk, dv (each may be null when that input is frozen). The four products are
/// gemm calls per (b, h) whose every element is the same fma chain as the plain loops of the header
/// comment: masked entries of att and dS are exact zeros, which leave a chain's bits unchanged.
/// One query head at a time: its scores' gradient dS (T x Tk) is made, used by the three products
/// that read it and dropped while it is still in the cache, and the key and value gradients of its
/// kv group grow as its heads go by (B * NH * T * Tk values for every head at once went through
/// memory four times, and had to be allocated and cleared).
template <class T>
void attention_backward(const backend::cpu& be, T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* att, const attention_dims& d, const attention_options& o) {
    const index_t Tq = d.T, Tk = d.Tk, NH = d.NH, HS = d.HS, G = d.NH / d.NKV;
    const index_t C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T scale = T(d.scale);
    const auto kv_at = [&](index_t b, index_t g) { return b * d.kv_rows * Ck + g * HS; };
    const bool scores = dq || dk;
    // every value is written before it is read: no clearing
    const auto dS = std::make_unique_for_overwrite<T[]>(size_t(scores ? Tq * Tk : 0));
    const auto acc_q = std::make_unique_for_overwrite<T[]>(size_t(dq ? Tq * HS : 0));
    const auto acc_k = std::make_unique_for_overwrite<T[]>(size_t(dk ? Tk * HS : 0));
    const auto acc_v = std::make_unique_for_overwrite<T[]>(size_t(dv ? Tk * HS : 0));
    // dst[r, i] += acc[r, i] (times c where scaled) for rows r < rows of HS values, dst's rows ld apart
    const auto add_into = [&](T* dst, index_t ld, index_t rows, const T* acc, bool scaled) {
        ALIGNGPT_OMP_FOR
        for (index_t r = 0; r < rows; r++)
            for (index_t i = 0; i < HS; i++) dst[r * ld + i] += scaled ? acc[r * HS + i] * scale : acc[r * HS + i];
    };
    for (index_t b = 0; b < d.B; b++)
        for (index_t g = 0; g < d.NKV; g++) {
            for (index_t h = g * G; h < (g + 1) * G; h++) {
                const index_t bh = b * NH + h;
                const T* q_bh = q + b * Tq * C + h * HS;
                const T* dout_bh = dout + b * Tq * C + h * HS;
                const T* att_bh = att + bh * Tq * Tk;
                // dv_j += sum_{h in group} sum_t p_tj dO_t, dk_j += c * sum_{h in group} sum_t dS_tj q_t: one
                // chain per element over the group's heads (ascending), then t (ascending): the first
                // head starts it, the others continue it (gemm_init::accumulate)
                const gemm_init in_group = h == g * G ? gemm_init::zero : gemm_init::accumulate;
                if (dv) gemm(be, Tk, HS, Tq, att_bh, index_t(1), Tk, dout_bh, C, index_t(1), acc_v.get(), HS, in_group);
                if (!scores) continue;
                // dP_bh = dO_bh V_g^T (dP_tj = dO_t . v_j, one fma chain over i ascending), then dS in place
                gemm(be, Tq, Tk, HS, dout_bh, C, index_t(1), v + kv_at(b, g), index_t(1), Ck, dS.get(), Tk, gemm_init::zero);
                attention_softmax_backward(be, dS.get(), att_bh, d, o, bh * Tq, (bh + 1) * Tq);
                if (dq) {  // dq_t += c * sum_j dS_tj k_j   (j ascending)
                    gemm(be, Tq, HS, Tk, dS.get(), Tk, index_t(1), k + kv_at(b, g), Ck, index_t(1), acc_q.get(), HS,
                         gemm_init::zero);
                    add_into(dq + b * Tq * C + h * HS, C, Tq, acc_q.get(), true);
                }
                if (dk) gemm(be, Tk, HS, Tq, dS.get(), index_t(1), Tk, q_bh, C, index_t(1), acc_k.get(), HS, in_group);
            }
            if (dv) add_into(dv + kv_at(b, g), Ck, Tk, acc_v.get(), false);
            if (dk) add_into(dk + kv_at(b, g), Ck, Tk, acc_k.get(), true);
        }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

using ops::attention_options;

/// softmax(c q k^T + mask) v per head: q [B, T, NH*HS], k and v [B, Tk, NKV*HS] -> [B, T, NH*HS].
template <class T, class Backend>
autograd::variable<T, Backend> attention(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& q,
                                         const autograd::variable<T, Backend>& k, const autograd::variable<T, Backend>& v,
                                         const attention_options& opts) {
    const Backend& be = q.backend();
    const auto sq = detail::shape_str(q.shape()), sk = detail::shape_str(k.shape()), sv = detail::shape_str(v.shape());
    ALIGNGPT_CHECK(q.value().dim() == 3 && k.value().dim() == 3 && v.value().dim() == 3, "attention: q ", sq, ", k ", sk, ", v ",
                   sv, " must be 3-d [B, T, heads*HS]");
    const int NH = opts.n_head, NKV = opts.n_kv_head ? opts.n_kv_head : opts.n_head;
    ALIGNGPT_CHECK(NH > 0 && NKV > 0 && NH % NKV == 0, "attention: n_head ", NH, " is not a multiple of n_kv_head ", NKV);
    ALIGNGPT_CHECK(q.size(2) % NH == 0, "attention: q ", sq, " last dim is not a multiple of n_head ", NH);
    const int HS = int(q.size(2) / NH);
    ALIGNGPT_CHECK(k.size(0) == q.size(0) && k.size(2) == index_t(NKV) * HS, "attention: q ", sq, " and k ", sk,
                   " do not match (n_head ", NH, ", n_kv_head ", NKV, ")");
    ALIGNGPT_CHECK(v.shape() == k.shape(), "attention: k ", sk, " and v ", sv, " differ");
    const index_t Tk = opts.n_keys < 0 ? k.size(1) : opts.n_keys;
    ALIGNGPT_CHECK(Tk <= k.size(1), "attention: n_keys ", Tk, " > the ", k.size(1), " rows of k ", sk);
    ALIGNGPT_CHECK(!tp || Tk == k.size(1), "attention: n_keys (a KV cache's prefix) is for inference; no tape");
    ops::attention_dims d(q.size(0), q.size(1), Tk, HS, opts);
    d.kv_rows = k.size(1);

    tensor<T, Backend> out(q.shape(), be), att({d.B, index_t(NH), d.T, d.Tk}, be);
    attention_forward(be, out.data(), att.data(), q.value().data(), k.value().data(), v.value().data(), d, opts);
    return autograd::tape<T, Backend>::record(tp, "attention", out, {q, k, v},
                                              [q, k, v, att, d, opts](autograd::node<T, Backend>& n) {
                                                  const Backend& bk = n.value.backend();
                                                  T* dq = q.requires_grad() ? q.get()->grad_buffer().data() : nullptr;
                                                  T* dk = k.requires_grad() ? k.get()->grad_buffer().data() : nullptr;
                                                  T* dv = v.requires_grad() ? v.get()->grad_buffer().data() : nullptr;
                                                  attention_backward(bk, dq, dk, dv, n.grad.data(), q.value().data(),
                                                                     k.value().data(), v.value().data(), att.data(), d, opts);
                                              });
}

}  // namespace aligngpt::ag
