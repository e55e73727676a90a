#pragma once
// Prepacked linear weights: W[N, K] (the Hugging Face layout, y = x W^T + b) rearranged once,
// at load, into the panels the GEMM micro-kernel and the decode GEMV read (docs/design.md "GEMM").
//
//   W[N, K] row-major                      packed_weight<S>: P = ceil(N / 32) panels, each K x 32
//                                          (k-major: the 32 weights of one k are contiguous)
//        k=0   1   2  ...  K-1
//   j=0  [w00 w01 w02 ... ]                panel 0: k=0: W[0,0]  W[1,0]  ... W[31,0]
//   j=1  [w10 w11 w12 ... ]                         k=1: W[0,1]  W[1,1]  ... W[31,1]
//   ...                                             ...
//   j=31 [...             ]                         k=K-1: W[0,K-1] ...   W[31,K-1]
//   j=32 [...             ]   ------>      panel 1: k=0: W[32,0] W[33,0] ... W[63,0]
//   ...                                             ...
//   j=N-1                                  panel P-1: columns j >= N are zero (padding)
//
//   element (j, k) lives at data[(j / 32) * K * 32 + k * 32 + j % 32]
//
// S is float, bf16 or f16; 16-bit weights stay 16-bit in the panels (half the bytes to stream)
// and are widened exactly to f32 in registers (bf16: a 16-bit shift; f16: vcvtph2ps).
//
// linear_packed computes Y[M, N] = X[M, K] W^T (+ bias) with, for every output element, the chain
//   y = bias[j] (or +0);  for k = 0 .. K-1 in order:  y = fma(X[i,k], float(W[j,k]), y)
// i.e. exactly gemm_reference on the widened weights. M == 1 (one decoded token) takes a GEMV
// path that streams the panels contiguously, threads split over panels; it follows the same
// chain, so a decoded token equals the same row of a prefill bit for bit, and batch 1 == batch N.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "aligngpt/backend/cpu.h"
#include "aligngpt/config.h"
#include "aligngpt/half.h"
#include "aligngpt/ops/gemm.h"

namespace aligngpt::ops {

template <class S>
struct packed_weight {
    static_assert(std::is_same_v<S, float> || std::is_same_v<S, bf16> || std::is_same_v<S, f16>,
                  "packed_weight: S must be float, bf16 or f16");
    /// Output features per panel (two AVX-512 vectors of f32).
    static constexpr index_t panel_width = 32;

    packed_weight() = default;

    /// Packs W[N, K] (row-major; the layout of a checkpoint's linear weight).
    static packed_weight pack(const S* W, index_t N, index_t K) {
        ALIGNGPT_CHECK(N >= 0 && K >= 0, "packed_weight::pack: negative size N=", N, " K=", K);
        ALIGNGPT_CHECK(W != nullptr || N * K == 0, "packed_weight::pack: null weights for N=", N, " K=", K);
        packed_weight pw;
        pw.N_ = N;
        pw.K_ = K;
        pw.data_ = backend::cpu::buffer<S>(pw.panels() * K * panel_width);  // zero-filled: the padding
        S* out = pw.data_.data();
        // Blocks of 8 k by the panel's 32 rows of W: reads stay within a few lines per row.
        for (index_t p = 0; p < pw.panels(); p++) {
            const index_t j0 = p * panel_width, nr = std::min(panel_width, N - j0);
            S* dst = out + p * K * panel_width;
            for (index_t k0 = 0; k0 < K; k0 += 64) {
                const index_t k1 = std::min(K, k0 + 64);
                for (index_t j = 0; j < nr; j++) {
                    const S* src = W + (j0 + j) * K;
                    for (index_t k = k0; k < k1; k++) dst[k * panel_width + j] = src[k];
                }
            }
        }
        return pw;
    }

    index_t N() const { return N_; }
    index_t K() const { return K_; }
    index_t panels() const { return (N_ + panel_width - 1) / panel_width; }
    /// Panel p: K x 32 values, k-major.
    const S* panel(index_t p) const { return data_.data() + p * K_ * panel_width; }
    /// Bytes of the packed weights (what a GEMV streams).
    std::size_t bytes() const { return std::size_t(panels() * K_ * panel_width) * sizeof(S); }

    /// out[0..K) = the widened row W[j, :].
    void unpack_row(index_t j, float* out) const {
        ALIGNGPT_CHECK(j >= 0 && j < N_, "packed_weight::unpack_row: row ", j, " outside [0, ", N_, ")");
        const S* p = panel(j / panel_width) + j % panel_width;
        for (index_t k = 0; k < K_; k++) out[k] = widen(p[k * panel_width]);
    }

private:
    index_t N_ = 0, K_ = 0;
    backend::cpu::buffer<S> data_;
};

namespace detail {

/// simd<float> load of `lanes` consecutive storage values, widened exactly to f32.
template <class S>
inline typename simd<float>::V load_widen(const S* p) {
    if constexpr (std::is_same_v<S, float>) {
        return simd<float>::load(p);
    } else {
#if defined(__AVX512F__)
        // (maskz forms with an all-ones mask: the same instructions, and no GCC 12 false
        // -Wmaybe-uninitialized from the _mm512_undefined_* inside the unmasked intrinsics)
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        if constexpr (std::is_same_v<S, bf16>)
            return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, h), 16));
        else
            return _mm512_maskz_cvtph_ps(0xFFFF, h);
#elif defined(__AVX2__) && defined(__FMA__)
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        if constexpr (std::is_same_v<S, bf16>) {
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        } else {
#if defined(__F16C__)
            return _mm256_cvtph_ps(h);
#else
            alignas(32) float t[8];
            for (int l = 0; l < 8; l++) t[l] = widen(p[l]);
            return _mm256_load_ps(t);
#endif
        }
#else
        return widen(*p);
#endif
    }
}

/// Widens n (a multiple of simd<float>::lanes) storage values to f32.
template <class S>
inline void widen_block(const S* src, float* dst, index_t n) {
    constexpr int L = simd<float>::lanes;
    for (index_t i = 0; i < n; i += L) simd<float>::store(dst + i, load_widen(src + i));
}

/// GEMV on G consecutive panels p0..p0+G-1 (all full or the caller passes G == 1):
///   y[j] = b[j] (or +0); for k in order: y[j] = fma(x[k], W[j,k], y[j]).
/// G panels x (32 / lanes) vectors = independent fma chains; the panels stream contiguously.
template <int G, class S>
inline void gemv_panels(const packed_weight<S>& W, index_t p0, const float* x, const float* bias, float* y) {
    using F = simd<float>;
    using V = typename F::V;
    constexpr index_t PW = packed_weight<S>::panel_width;
    constexpr int L = F::lanes, NV = int(PW) / L;
    const index_t N = W.N(), K = W.K();
    V acc[G][NV];
    alignas(64) float t[PW];
    for (int g = 0; g < G; g++) {
        const index_t j0 = (p0 + g) * PW, nr = std::min(PW, N - j0);
        for (index_t j = 0; j < PW; j++) t[j] = bias && j < nr ? bias[j0 + j] : 0.0f;
        for (int v = 0; v < NV; v++) acc[g][v] = F::load(t + v * L);
    }
    const S* w[G];
    for (int g = 0; g < G; g++) w[g] = W.panel(p0 + g);
    for (index_t k = 0; k < K; k++) {
        const V xk = F::set1(x[k]);
        for (int g = 0; g < G; g++) {
            // 16 steps of k ahead (measured: +20% for bf16 panels over the hardware prefetchers alone)
            for (std::size_t l = 0; l < sizeof(S) * PW; l += 64)
                prefetch_l1(reinterpret_cast<const char*>(w[g] + 16 * PW) + l);
            for (int v = 0; v < NV; v++) acc[g][v] = F::fma(xk, load_widen(w[g] + v * L), acc[g][v]);
            w[g] += PW;
        }
    }
    for (int g = 0; g < G; g++) {
        const index_t j0 = (p0 + g) * PW, nr = std::min(PW, N - j0);
        for (int v = 0; v < NV; v++) F::store(t + v * L, acc[g][v]);
        std::memcpy(y + j0, t, std::size_t(nr) * sizeof(float));
    }
}

/// One thread task of linear_packed (M >= 2): rows [m0, m1), panels [q0, q1). The f32 panels are
/// read in place; 16-bit panels are widened (exactly) into an L1/L2 buffer once per block and
/// then serve every row tile, so the widening costs O(K N) per call, not O(M K N).
template <class S>
void linear_task(index_t m0, index_t m1, index_t q0, index_t q1, float* Y, const float* X,
                 const packed_weight<S>& W, const float* bias) {
    constexpr index_t PW = packed_weight<S>::panel_width;
    static_assert(PW % blocking<float>::NR == 0, "the kernel width must divide the panel width");
    const index_t K = W.K();
    scratch<float, 1> wbuf(std::is_same_v<S, float> ? 1 : std::min<index_t>(K, blocking<float>::KC) * PW);
    auto panel = [&](index_t q, index_t pc, index_t kc) -> const float* {
        if constexpr (std::is_same_v<S, float>) {
            (void)kc;
            return W.panel(q) + pc * PW;
        } else {
            widen_block(W.panel(q) + pc * PW, wbuf.get(), kc * PW);
            return wbuf.get();
        }
    };
    auto prefetch = [&](index_t q, index_t pc, index_t kc, std::size_t l0, std::size_t n) {
        prefetch_lines_l2(W.panel(q) + pc * PW, std::size_t(kc * PW) * sizeof(S), l0, n);
    };
    task_loop(m0, m1, q0, q1, W.N(), K, PW, X, K, index_t(1), Y, W.N(),
              bias ? gemm_init::bias : gemm_init::zero, bias, panel, prefetch);
}

}  // namespace detail

/// Y[M, N] = X[M, K] W^T (+ bias[N]), N = W.N(), K = W.K(). X must be M x W.K() row-major (the
/// API takes M only; the caller owns that shape), Y is M x W.N() row-major, bias may be null.
/// Bit-identical to gemm_reference(M, N, K, X, K, 1, float(W)^T, 1, K, Y, N, bias ? init::bias :
/// init::zero, bias) for any thread count and SIMD path; M == 1 streams the panels (GEMV).
template <class S>
void linear_packed(const backend::cpu&, float* Y, const float* X, const packed_weight<S>& W, const float* bias,
                   index_t M) {
    ALIGNGPT_CHECK(M >= 0, "linear_packed: negative M=", M);
    const index_t N = W.N(), K = W.K();
    if (M == 0 || N == 0) return;
    ALIGNGPT_CHECK(Y != nullptr && (X != nullptr || K == 0), "linear_packed: null X or Y for M=", M);
    if (K == 0) return detail::gemm_fill_init(M, N, Y, N, bias ? gemm_init::bias : gemm_init::zero, bias);
    constexpr index_t PW = packed_weight<S>::panel_width;
    const index_t P = W.panels();
    if (M == 1) {
        // Decode: groups of 4 panels = 8 (AVX-512) independent chains per step of k; threads
        // take contiguous runs of groups (static schedule), each panel's output is its own.
        constexpr int G = 4;
        const index_t groups = (P + G - 1) / G;
        const bool par = double(N) * double(K) >= double(1 << 16);
        (void)par;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (par)
#endif
        for (index_t g = 0; g < groups; g++) {
            const index_t p0 = g * G;
            if (p0 + G <= P)
                detail::gemv_panels<G>(W, p0, X, bias, Y);
            else
                for (index_t p = p0; p < P; p++) detail::gemv_panels<1>(W, p, X, bias, Y);
        }
        return;
    }
    using BL = detail::blocking<float>;
    const detail::task_grid grid(M, N, K, BL::MR, PW, max_threads());
    const index_t tasks = grid.tasks();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks > 1)
#endif
    for (index_t t = 0; t < tasks; t++) {
        index_t m0, m1, n0, n1;
        grid.range(t, BL::MR, PW, M, N, m0, m1, n0, n1);
        detail::linear_task(m0, m1, n0 / PW, (n1 + PW - 1) / PW, Y, X, W, bias);
    }
}

/// W[N, K] = float(packed rows), exact: the input gradient dX = dY W of a packed linear uses it.
template <class S>
void packed_unpack(const backend::cpu&, float* W, const packed_weight<S>& pw) {
    ALIGNGPT_OMP_FOR
    for (index_t j = 0; j < pw.N(); j++) pw.unpack_row(j, W + j * pw.K());
}

}  // namespace aligngpt::ops
