#pragma once
// The matrix product whose bits we promise (style.md section 5, docs/design.md "GEMM").
//
//   C(i,j) = c0(i,j);  for k = 0 .. K-1 in order:  C(i,j) = fma(A(i,k), B(k,j), C(i,j))
//   c0 = 0 (init::zero), bias[j] (init::bias), or the value already in C (init::accumulate)
//
// A(i,k) = A[i*rs_a + k*cs_a], B(k,j) = B[k*rs_b + j*cs_b], C(i,j) = C[i*ldc + j], so every
// transpose the models and their backward passes need is a choice of strides:
//   Y = X W^T  (linear):   A = X (rs=K, cs=1),  B = W^T (rs=1, cs=K)
//   dX = dY W:             A = dY,              B = W   (rs=K, cs=1)
//   dW += dY^T X:          A = dY^T (rs=1, cs=N), B = X, init::accumulate
// Because each output element is one fixed fma chain, the result does not depend on threads,
// SIMD width or blocking; gemm() must equal gemm_reference() bit for bit (tests/test_gemm.cpp).
//
// How gemm() is fast and still exact (the BLIS/GotoBLAS loop nest, with the k order kept):
//
//   for each thread task (an M range x N range of C; threads never share an output)
//     for jc in N range, step NC                       B block  KC x NC  -> packed, NR-wide panels
//       for pc in 0..K, step KC      (in order)        A block  MC x KC  -> packed, MR-tall panels
//         for ic in M range, step MC
//           for jr in the NC block, step NR            one B panel (KC x NR) stays in L1
//             for ir in the MC block, step MR          micro_kernel: MR x NR accumulators
//               acc = (pc == 0 ? c0 : C tile)            <- running C loaded first, so blocking
//               for k in pc .. pc+KC-1:                     K does not change the order
//                 acc[r][:] = fma(A(i+r,k), B(k, j:j+NR), acc[r][:])   (a vector of NR columns)
//               C tile = acc
//
// Vectors run across output columns, never across k; every lane does the scalar fma chain of
// gemm_reference, so AVX-512, AVX2+FMA and the std::fma scalar path give the same bits.
// Packing only copies (and zero-pads the edges, whose results are discarded).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "aligngpt/backend/cpu.h"
#include "aligngpt/config.h"

namespace aligngpt::ops {

enum class gemm_init { zero, bias, accumulate };

/// The definition: three plain loops, one fma per term, k innermost and in order.
template <class T>
void gemm_reference(index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B,
                    index_t rs_b, index_t cs_b, T* C, index_t ldc, gemm_init init, const T* bias) {
    for (index_t i = 0; i < M; i++)
        for (index_t j = 0; j < N; j++) {
            T acc = init == gemm_init::zero ? T(0) : init == gemm_init::bias ? bias[j] : C[i * ldc + j];
            for (index_t k = 0; k < K; k++) acc = std::fma(A[i * rs_a + k * cs_a], B[k * rs_b + j * cs_b], acc);
            C[i * ldc + j] = acc;
        }
}

inline void gemm_check(const char* op, index_t M, index_t N, index_t K, gemm_init init, const void* bias) {
    ALIGNGPT_CHECK(M >= 0 && N >= 0 && K >= 0, op, ": negative size M=", M, " N=", N, " K=", K);
    ALIGNGPT_CHECK(init != gemm_init::bias || bias != nullptr, op, ": init::bias without a bias pointer");
}

namespace detail {

// ---- SIMD: the few operations the kernels need ---------------------------------------------
// simd<T>::fma(a, b, c) is a*b + c rounded once, lane by lane: the same value as std::fma.
template <class T>
struct simd_scalar {
    using V = T;
    static constexpr int lanes = 1;
    static V zero() { return T(0); }
    static V set1(T x) { return x; }
    static V load(const T* p) { return *p; }
    static void store(T* p, V v) { *p = v; }
    static V fma(V a, V b, V c) { return std::fma(a, b, c); }
};
template <class T>
struct simd : simd_scalar<T> {};

#if defined(__AVX512F__)
inline constexpr const char* simd_isa = "avx512";
template <>
struct simd<float> {
    using V = __m512;
    static constexpr int lanes = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
};
template <>
struct simd<double> {
    using V = __m512d;
    static constexpr int lanes = 8;
    static V zero() { return _mm512_setzero_pd(); }
    static V set1(double x) { return _mm512_set1_pd(x); }
    static V load(const double* p) { return _mm512_loadu_pd(p); }
    static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
};
/// Register tile of the micro-kernel: MR rows x NV vectors. 14 x 2 zmm = 28 accumulators
/// (>= 8 independent chains hide the 4-cycle fma latency on both fma ports), 2 for B, 1 for A.
template <class T>
struct tile_shape {
    static constexpr int MR = std::is_same_v<T, float> || std::is_same_v<T, double> ? 14 : 4;
    static constexpr int NV = std::is_same_v<T, float> || std::is_same_v<T, double> ? 2 : 8;
};
#elif defined(__AVX2__) && defined(__FMA__)
inline constexpr const char* simd_isa = "avx2";
template <>
struct simd<float> {
    using V = __m256;
    static constexpr int lanes = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
};
template <>
struct simd<double> {
    using V = __m256d;
    static constexpr int lanes = 4;
    static V zero() { return _mm256_setzero_pd(); }
    static V set1(double x) { return _mm256_set1_pd(x); }
    static V load(const double* p) { return _mm256_loadu_pd(p); }
    static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
};
/// 6 x 2 ymm = 12 accumulators of the 16 registers.
template <class T>
struct tile_shape {
    static constexpr int MR = std::is_same_v<T, float> || std::is_same_v<T, double> ? 6 : 4;
    static constexpr int NV = std::is_same_v<T, float> || std::is_same_v<T, double> ? 2 : 8;
};
#else
inline constexpr const char* simd_isa = "scalar";
/// Portable path: 4 x 8 scalar std::fma chains (slow without -mfma, but the same bits).
template <class T>
struct tile_shape {
    static constexpr int MR = 4;
    static constexpr int NV = 8;
};
#endif

/// Blocking of the loop nest above; any values give the same bits (they only move loads/stores).
template <class T>
struct blocking {
    static constexpr int MR = tile_shape<T>::MR;
    static constexpr int NR = tile_shape<T>::NV * simd<T>::lanes;
    static constexpr index_t KC = 256;             // B panel KC x NR: 32 KiB of f32 stays in L1
    static constexpr index_t MC = index_t(MR) * 72;  // A block MC x KC: ~1 MiB of f32 in L2
    static constexpr index_t NC = index_t(NR) * 128; // B block KC x NC: 4 MiB of f32 in L3
};

/// Scratch memory for packed panels: 64-byte aligned, uninitialised (packing writes all of it).
template <class T>
struct scratch {
    struct free_deleter {
        void operator()(T* p) const { std::free(p); }
    };
    std::unique_ptr<T, free_deleter> p;
    explicit scratch(index_t n) {
        const std::size_t bytes = ((std::size_t(std::max<index_t>(n, 1)) * sizeof(T) + 63) / 64) * 64;
        p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
        if (!p) throw std::bad_alloc();
    }
    T* get() const { return p.get(); }
};

/// How the accumulators start: +0, one row s[0..NR) for every row (the bias), or the running C.
enum class start { zero, row, load };

/// acc(MR x NR) = start; for k < kc: acc[r][:] = fma(a[k*MR + r], b[k*ldb + 0..NR), acc[r][:]);
/// C = acc.  a: packed A panel (k-major, MR per k); b: B panel rows with stride ldb.
template <class T>
inline void micro_kernel(index_t kc, const T* __restrict a, const T* __restrict b, index_t ldb, T* __restrict c,
                         index_t ldc, start st, const T* srow) {
    using S = simd<T>;
    using V = typename S::V;
    constexpr int MR = tile_shape<T>::MR, NV = tile_shape<T>::NV, L = S::lanes;
    V acc[MR][NV];
    if (st == start::load) {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) acc[r][v] = S::load(c + r * ldc + v * L);
    } else if (st == start::row) {
        for (int v = 0; v < NV; v++) {
            const V s = S::load(srow + v * L);
            for (int r = 0; r < MR; r++) acc[r][v] = s;
        }
    } else {
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NV; v++) acc[r][v] = S::zero();
    }
    for (index_t k = 0; k < kc; k++) {
        V bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = S::load(b + v * L);
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
        _mm_prefetch(reinterpret_cast<const char*>(a + 8 * MR), _MM_HINT_T0);
#endif
        for (int r = 0; r < MR; r++) {
            const V av = S::set1(a[r]);
            for (int v = 0; v < NV; v++) acc[r][v] = S::fma(av, bv[v], acc[r][v]);
        }
        a += MR;
        b += ldb;
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) S::store(c + r * ldc + v * L, acc[r][v]);
}

/// The micro-kernel on an edge tile (mr <= MR rows, nr <= NR columns valid): runs the full
/// tile on a local copy and writes back only the valid part. Same fma chains.
template <class T>
inline void micro_kernel_edge(index_t kc, const T* a, const T* b, index_t ldb, T* c, index_t ldc, start st,
                              const T* srow, index_t mr, index_t nr) {
    constexpr int MR = blocking<T>::MR, NR = blocking<T>::NR;
    if (mr == MR && nr == NR) return micro_kernel(kc, a, b, ldb, c, ldc, st, srow);
    alignas(64) T t[MR * NR];
    for (index_t r = 0; r < MR; r++)
        for (index_t j = 0; j < NR; j++)
            t[r * NR + j] = r >= mr || j >= nr   ? T(0)
                            : st == start::load ? c[r * ldc + j]
                            : st == start::row  ? srow[j]
                                                : T(0);
    micro_kernel(kc, a, b, ldb, t, NR, start::load, static_cast<const T*>(nullptr));
    for (index_t r = 0; r < mr; r++)
        for (index_t j = 0; j < nr; j++) c[r * ldc + j] = t[r * NR + j];
}

/// Packs A(0..mc, 0..kc) (A points at the block's first element) into MR-tall panels:
/// panel p holds rows p*MR .. p*MR+MR-1, k-major: out[p*MR*kc + k*MR + r]; rows >= mc are 0.
template <class T>
inline void pack_a(index_t mc, index_t kc, const T* A, index_t rs, index_t cs, T* out) {
    constexpr int MR = blocking<T>::MR;
    for (index_t i0 = 0; i0 < mc; i0 += MR) {
        const index_t mr = std::min<index_t>(MR, mc - i0);
        T* p = out + i0 * kc;
        if (cs == 1 && mr == MR) {
            for (int r = 0; r < MR; r++) {
                const T* src = A + (i0 + r) * rs;
                for (index_t k = 0; k < kc; k++) p[k * MR + r] = src[k];
            }
        } else {
            for (index_t k = 0; k < kc; k++)
                for (index_t r = 0; r < MR; r++) p[k * MR + r] = r < mr ? A[(i0 + r) * rs + k * cs] : T(0);
        }
    }
}

/// Packs B(0..kc, 0..nc) into panels of width W, k-major: out[p*W*kc + k*W + j]; the columns
/// past nc in the last panel are 0. (packed.h uses the same layout for prepacked weights.)
template <class T, class Src>
inline void pack_b(index_t kc, index_t nc, const Src* B, index_t rs, index_t cs, T* out, index_t W) {
    for (index_t j0 = 0; j0 < nc; j0 += W) {
        const index_t nr = std::min<index_t>(W, nc - j0);
        T* p = out + j0 * kc;
        if (cs == 1) {
            for (index_t k = 0; k < kc; k++)
                for (index_t j = 0; j < W; j++) p[k * W + j] = j < nr ? T(B[k * rs + j0 + j]) : T(0);
        } else {
            for (index_t j = 0; j < W; j++)
                for (index_t k = 0; k < kc; k++) p[k * W + j] = j < nr ? T(B[k * rs + (j0 + j) * cs]) : T(0);
        }
    }
}

/// One output block: C(0..mc, 0..nc) += packed A (mc x kc) times packed B (kc x nc, NR-wide
/// panels with stride kc*NR). jr outer so the B panel stays in L1 while A panels stream from L2.
template <class T>
inline void macro_kernel(index_t mc, index_t nc, index_t kc, const T* ap, const T* bp, T* C, index_t ldc,
                         start st, const T* srow) {
    constexpr int MR = blocking<T>::MR, NR = blocking<T>::NR;
    for (index_t j = 0; j < nc; j += NR) {
        const index_t nr = std::min<index_t>(NR, nc - j);
        const T* b = bp + j * kc;
        for (index_t i = 0; i < mc; i += MR)
            micro_kernel_edge(kc, ap + i * kc, b, NR, C + i * ldc + j, ldc, st, srow ? srow + j : srow,
                              std::min<index_t>(MR, mc - i), nr);
    }
}

/// Splits C into tm x tn thread tasks (whole MR rows / `unit` columns each); a pure function of
/// the sizes and the thread count, and no output belongs to two tasks.
struct task_grid {
    index_t tm = 1, tn = 1, mu = 0, nu = 0;
    task_grid(index_t M, index_t N, index_t K, index_t MR, index_t unit, int threads) {
        mu = (M + MR - 1) / MR;
        nu = (N + unit - 1) / unit;
        if (threads <= 1 || double(M) * double(N) * double(K) < double(1 << 18) || mu == 0 || nu == 0) return;
        tn = std::min<index_t>(threads, nu);
        tm = std::max<index_t>(1, std::min<index_t>(threads / tn, mu));
    }
    index_t tasks() const { return tm * tn; }
    /// [begin, end) of task t in rows (unit MR) and columns (unit `unit`), clipped to M, N.
    void range(index_t t, index_t MR, index_t unit, index_t M, index_t N, index_t& m0, index_t& m1, index_t& n0,
               index_t& n1) const {
        const index_t a = t / tn, b = t % tn;
        m0 = std::min(M, (a * mu / tm) * MR);
        m1 = std::min(M, ((a + 1) * mu / tm) * MR);
        n0 = std::min(N, (b * nu / tn) * unit);
        n1 = std::min(N, ((b + 1) * nu / tn) * unit);
    }
};

/// C(i,j) = c0 for K == 0 (no terms: the chain is its start value).
template <class T>
inline void gemm_fill_init(index_t M, index_t N, T* C, index_t ldc, gemm_init init, const T* bias) {
    if (init == gemm_init::accumulate) return;
    for (index_t i = 0; i < M; i++)
        for (index_t j = 0; j < N; j++) C[i * ldc + j] = init == gemm_init::bias ? bias[j] : T(0);
}

/// One thread task of gemm: rows [m0, m1), columns [n0, n1) of C.
template <class T>
void gemm_task(index_t m0, index_t m1, index_t n0, index_t n1, index_t K, const T* A, index_t rs_a, index_t cs_a,
               const T* B, index_t rs_b, index_t cs_b, T* C, index_t ldc, gemm_init init, const T* bias) {
    using BL = blocking<T>;
    if (m1 <= m0 || n1 <= n0) return;
    const index_t kcmax = std::min<index_t>(BL::KC, K);
    const index_t mcmax = std::min<index_t>(BL::MC, (m1 - m0 + BL::MR - 1) / BL::MR * BL::MR);
    const index_t ncmax = std::min<index_t>(BL::NC, (n1 - n0 + BL::NR - 1) / BL::NR * BL::NR);
    scratch<T> abuf(mcmax * kcmax), bbuf(kcmax * ncmax);
    for (index_t jc = n0; jc < n1; jc += BL::NC) {
        const index_t nc = std::min<index_t>(BL::NC, n1 - jc);
        for (index_t pc = 0; pc < K; pc += BL::KC) {
            const index_t kc = std::min<index_t>(BL::KC, K - pc);
            pack_b(kc, nc, B + pc * rs_b + jc * cs_b, rs_b, cs_b, bbuf.get(), index_t(BL::NR));
            const start st = pc > 0 ? start::load
                             : init == gemm_init::zero ? start::zero
                             : init == gemm_init::bias ? start::row
                                                       : start::load;
            for (index_t ic = m0; ic < m1; ic += BL::MC) {
                const index_t mc = std::min<index_t>(BL::MC, m1 - ic);
                pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, abuf.get());
                macro_kernel(mc, nc, kc, abuf.get(), bbuf.get(), C + ic * ldc + jc, ldc, st,
                             st == start::row ? bias + jc : static_cast<const T*>(nullptr));
            }
        }
    }
}

}  // namespace detail

/// C = c0 + A B as defined above. Threads split C into output tiles; each element is one fma chain.
template <class T>
void gemm(const backend::cpu&, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a,
          const T* B, index_t rs_b, index_t cs_b, T* C, index_t ldc, gemm_init init = gemm_init::zero,
          const T* bias = nullptr) {
    gemm_check("gemm", M, N, K, init, bias);
    if (M == 0 || N == 0) return;
    if (K == 0) return detail::gemm_fill_init(M, N, C, ldc, init, bias);
    using BL = detail::blocking<T>;
    const detail::task_grid grid(M, N, K, BL::MR, BL::NR, max_threads());
    const index_t tasks = grid.tasks();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks > 1)
#endif
    for (index_t t = 0; t < tasks; t++) {
        index_t m0, m1, n0, n1;
        grid.range(t, BL::MR, BL::NR, M, N, m0, m1, n0, n1);
        detail::gemm_task(m0, m1, n0, n1, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, init, bias);
    }
}

}  // namespace aligngpt::ops
