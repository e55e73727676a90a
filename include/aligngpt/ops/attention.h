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
//
// Causal skipping (as FlashAttention skips the blocks above the diagonal): the work is split into
// blocks of query rows (of key rows for dk, dv), and a block's products stop at the last key any of
// its rows sees (start at the first query that sees any of its keys). The terms left out have p_tj
// or dS_tj exactly 0 and finite factors. A chain that starts at +0 (gemm_init::zero) is never -0
// in round-to-nearest (x + y is -0 only when both are -0), so adding 0 * finite = +-0 leaves it as
// it was: the bits are those of the full chains. (They differ only where q, k, v or dO hold an
// infinity or a NaN that only a masked term multiplies: the full chain turned that into NaN.)
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
    /// Query t sees no key at or after visible_end(t): Tk, or past + t + 1 when causal.
    index_t visible_end(const attention_options& o, index_t t) const {
        return o.causal ? std::clamp<index_t>(past + t + 1, 0, Tk) : Tk;
    }
    /// No query before first_query(j) sees key j: 0, or j - past when causal.
    index_t first_query(const attention_options& o, index_t j) const {
        return o.causal ? std::clamp<index_t>(j - past, 0, T) : 0;
    }
    /// Query t of batch row b sees the keys j < key_end(o, b, t) that key_keep(o, b) keeps:
    /// visible_end(t) cut at key_lengths[b] (checked above to lie in [0, Tk]).
    index_t key_end(const attention_options& o, index_t b, index_t t) const {
        return o.key_lengths.empty() ? visible_end(o, t) : std::min(visible_end(o, t), o.key_lengths[size_t(b)]);
    }
    /// The key_mask bytes of batch row b (0: masked), or null when there is no key_mask.
    const std::uint8_t* key_keep(const attention_options& o, index_t b) const {
        return o.key_mask.empty() ? nullptr : o.key_mask.data() + b * Tk;
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

/// The forward's softmax of query rows [t0, t1) of batch row b of one head (kernels/attention.inc),
/// in place on their scores att_b (row t0 first): scale, mask, then p = e^(s - max) / sum.
template <class T>
void attention_softmax_rows(const backend::cpu& be, T* att_b, index_t b, index_t t0, index_t t1, T scale, const attention_dims& d,
                            const attention_options& o) {
    ALIGNGPT_ISA_DISPATCH(attention_softmax_rows<T>, be, att_b, b, t0, t1, scale, d, o)
}

namespace detail {

/// rows split into n nearly equal blocks of at most max_rows each: block i is [begin(i), begin(i + 1)).
struct row_blocks {
    index_t rows, n;
    row_blocks(index_t rows_, index_t max_rows) : rows(rows_), n((rows_ + max_rows - 1) / max_rows) {}
    index_t begin(index_t i) const { return i * rows / n; }
};

/// Rows per task: a block of rows x `cols` scores (about 1 MiB) stays in the cache between the
/// passes over it; 16 to 128 rows keep the products efficient and the tasks many.
inline index_t attention_rows_per_task(index_t cols, std::size_t elem_bytes) {
    return std::clamp<index_t>((index_t(1) << 20) / std::max<index_t>(1, cols * index_t(elem_bytes)), 16, 128);
}

}  // namespace detail

// T is the scalar type (float or double); Tq is the number of queries (d.T). att [B, NH, T, Tk]
// receives the probabilities for the backward, or is null when none will run.
// One task per block of query rows of one head (the longest rows first: the tasks are unequal when
// causal, hence the dynamic schedule); each task runs its products on its own thread.
template <class T>
void attention_forward(const backend::cpu& be, T* out, T* att, const T* q, const T* k, const T* v, const attention_dims& d,
                       const attention_options& o) {
    const index_t Tq = d.T, Tk = d.Tk, NH = d.NH, HS = d.HS, G = d.NH / d.NKV;
    const index_t C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T scale = T(d.scale);
    const detail::row_blocks blocks(Tq, detail::attention_rows_per_task(Tk, sizeof(T)));
    const index_t heads = d.B * NH, tasks = blocks.n * heads;
    ALIGNGPT_OMP_FOR_DYNAMIC
    for (index_t task = 0; task < tasks; task++) {
        const index_t bh = task % heads, b = bh / NH, h = bh % NH, blk = blocks.n - 1 - task / heads;
        const index_t t0 = blocks.begin(blk), t1 = blocks.begin(blk + 1);
        const index_t kend = d.visible_end(o, t1 - 1);  // no row of the block sees a key past it
        const T* k_g = k + b * d.kv_rows * Ck + (h / G) * HS;
        const T* v_g = v + b * d.kv_rows * Ck + (h / G) * HS;
        // Without att (no backward will read the probabilities: inference) the block's scores live
        // in the thread's scratch, cache-resident, and no [B, NH, T, Tk] buffer is filled.
        T* att_b = att ? att + (bh * Tq + t0) * Tk : detail::scratch<T, 3>((t1 - t0) * Tk).get();
        // pass 1 as one product: att[t, j] = q_t . k_j, a fma chain over i ascending from 0 (gemm.h),
        // i.e. the same bits as the plain dot product; masked entries are dropped below.
        gemm(be, t1 - t0, kend, HS, q + (b * Tq + t0) * C + h * HS, C, index_t(1), k_g, index_t(1), Ck, att_b, Tk,
             gemm_init::zero);
        // passes 1 (rest) to 3 on the block's rows (kernels/attention.inc)
        attention_softmax_rows(be, att_b, b, t0, t1, scale, d, o);
        // pass 4 as one product: out_t[i] = sum_j p_tj v_j[i], one fma chain over j ascending from 0;
        // a masked p_tj is exactly 0 and leaves the chain unchanged.
        gemm(be, t1 - t0, HS, kend, att_b, Tk, index_t(1), v_g, Ck, index_t(1), out + (b * Tq + t0) * C + h * HS, C,
             gemm_init::zero);
    }
}

/// Accumulates into dq, dk, dv (each may be null when that input is frozen). The four products are
/// gemm calls whose every element is the same fma chain as the plain loops of the header comment:
/// masked entries of att and dS are exact zeros, which leave a chain's bits unchanged.
/// One kv group (b, g) at a time, in two rounds of tasks: (A) per query head of the group and block
/// of query rows, dP, then dS in place, then that block's dq; (B) per block of key rows, the dk and
/// dv chains over the group's heads. dS of one group (G x T x Tk) stays in the cache between the
/// rounds; B * NH * T * Tk values at once went through memory four times.
template <class T>
void attention_backward(const backend::cpu& be, T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* att, const attention_dims& d, const attention_options& o) {
    const index_t Tq = d.T, Tk = d.Tk, NH = d.NH, HS = d.HS, G = d.NH / d.NKV;
    const index_t C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T scale = T(d.scale);
    const bool scores = dq || dk;
    const detail::row_blocks qblocks(Tq, detail::attention_rows_per_task(Tk, sizeof(T)));
    const detail::row_blocks kblocks(Tk, detail::attention_rows_per_task(Tq, sizeof(T)));
    // every value is written before it is read: no clearing
    const auto dS = std::make_unique_for_overwrite<T[]>(size_t(scores ? G * Tq * Tk : 0));
    for (index_t b = 0; b < d.B; b++)
        for (index_t g = 0; g < d.NKV; g++) {
            const T* k_g = k + b * d.kv_rows * Ck + g * HS;
            const T* v_g = v + b * d.kv_rows * Ck + g * HS;
            const index_t tasks_a = scores ? G * qblocks.n : 0;
            ALIGNGPT_OMP_FOR_DYNAMIC
            for (index_t task = 0; task < tasks_a; task++) {
                const index_t hg = task % G, h = g * G + hg, blk = qblocks.n - 1 - task / G, bh = b * NH + h;
                const index_t t0 = qblocks.begin(blk), t1 = qblocks.begin(blk + 1), rows = t1 - t0;
                const index_t kend = d.visible_end(o, t1 - 1);
                T* dS_b = dS.get() + (hg * Tq + t0) * Tk;
                // dP = dO V_g^T (dP_tj = dO_t . v_j, one fma chain over i ascending), then dS in place
                gemm(be, rows, kend, HS, dout + (b * Tq + t0) * C + h * HS, C, index_t(1), v_g, index_t(1), Ck, dS_b, Tk,
                     gemm_init::zero);
                attention_softmax_backward(be, dS_b, att + (bh * Tq + t0) * Tk, d, o, bh * Tq + t0, bh * Tq + t1);
                if (!dq) continue;
                // dq_t += c * sum_j dS_tj k_j   (j ascending)
                const auto acc = std::make_unique_for_overwrite<T[]>(size_t(rows * HS));
                gemm(be, rows, HS, kend, dS_b, Tk, index_t(1), k_g, Ck, index_t(1), acc.get(), HS, gemm_init::zero);
                for (index_t r = 0; r < rows; r++)
                    for (index_t i = 0; i < HS; i++) dq[(b * Tq + t0 + r) * C + h * HS + i] += acc[size_t(r * HS + i)] * scale;
            }
            if (!dk && !dv) continue;
            ALIGNGPT_OMP_FOR_DYNAMIC
            for (index_t blk = 0; blk < kblocks.n; blk++) {
                const index_t j0 = kblocks.begin(blk), rows = kblocks.begin(blk + 1) - j0;
                const index_t tq0 = d.first_query(o, j0);  // no earlier query sees a key of the block
                const auto acc_v = std::make_unique_for_overwrite<T[]>(size_t(dv ? rows * HS : 0));
                const auto acc_k = std::make_unique_for_overwrite<T[]>(size_t(dk ? rows * HS : 0));
                // dv_j += sum_{h in group} sum_t p_tj dO_t, dk_j += c * sum_{h in group} sum_t dS_tj q_t: one
                // chain per element over the group's heads (ascending), then t (ascending): the first
                // head starts it, the others continue it (gemm_init::accumulate). No query sees the
                // block (keys after the last query's position, an explicit past < Tk - T): +0.
                if (tq0 == Tq) {
                    std::fill(acc_v.get(), acc_v.get() + (dv ? rows * HS : 0), T(0));
                    std::fill(acc_k.get(), acc_k.get() + (dk ? rows * HS : 0), T(0));
                }
                for (index_t hg = 0; hg < G && tq0 < Tq; hg++) {
                    const index_t h = g * G + hg, bh = b * NH + h;
                    const gemm_init in_group = hg == 0 ? gemm_init::zero : gemm_init::accumulate;
                    if (dv)
                        gemm(be, rows, HS, Tq - tq0, att + (bh * Tq + tq0) * Tk + j0, index_t(1), Tk,
                             dout + (b * Tq + tq0) * C + h * HS, C, index_t(1), acc_v.get(), HS, in_group);
                    if (dk)
                        gemm(be, rows, HS, Tq - tq0, dS.get() + (hg * Tq + tq0) * Tk + j0, index_t(1), Tk,
                             q + (b * Tq + tq0) * C + h * HS, C, index_t(1), acc_k.get(), HS, in_group);
                }
                for (index_t r = 0; r < rows; r++)
                    for (index_t i = 0; i < HS; i++) {
                        const index_t at = b * d.kv_rows * Ck + (j0 + r) * Ck + g * HS + i;
                        if (dv) dv[at] += acc_v[size_t(r * HS + i)];
                        if (dk) dk[at] += acc_k[size_t(r * HS + i)] * scale;
                    }
            }
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

    // The probabilities are kept only for a backward that will run.
    const bool backward = autograd::tape<T, Backend>::will_record(tp, {q, k, v});
    tensor<T, Backend> out(q.shape(), be), att;
    if (backward) att = tensor<T, Backend>({d.B, index_t(NH), d.T, d.Tk}, be);
    attention_forward(be, out.data(), backward ? att.data() : nullptr, q.value().data(), k.value().data(), v.value().data(), d,
                      opts);
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
