#pragma once
// The matrix product whose bits we promise (docs/design.md "GEMM" and "The deterministic contract").
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
// How gemm() is fast and still exact (the GotoBLAS/BLIS loop nest, with the k order kept):
//
//   threads split C into tm x tn tasks (rows x column panels; no output has two owners)
//   for pc in 0..K, step kc   (in order; kc <= KC)
//     for jc in 0..N, step nc                      B block kc x nc -> NR-wide panels, packed by the
//                                                  whole team into a shared buffer (L3); barrier
//       for ic in the task's rows, step mc         A block mc x kc -> MR-tall panels (L2), packed by
//                                                  its task (once per pc when its rows fit one block)
//         for q in the task's panels of the block
//           for ir in the block, step MR           micro_kernel: MR x NR accumulators
//             acc = (pc == 0 ? c0 : C tile)              <- the running C is loaded first, so the
//             for k in pc .. pc+kc-1:                       K blocking does not change the order
//               acc[r][:] = fma(A(i+r,k), B(k, j:j+NR), acc[r][:])   (a vector of NR columns)
//             C tile = acc
//
// linear_packed (ops/packed.h) runs the same nest on weights packed once at load, so it skips
// the B blocks. Large M is split by rows, so A and B are each packed about once per call.
//
// AVX-512: MR x NR = 14 x 32 (28 zmm accumulators), KC = 512. While a panel is in use the
// next one and the next C tiles are prefetched.
// Vectors run across output columns, never across k; every lane does the scalar fma chain of
// gemm_reference, so AVX-512, AVX2+FMA and the std::fma scalar path give the same bits.
// Packing only copies (and zero-pads the edges, whose results are discarded).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

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
/// K and M are cut into near-equal blocks no larger than these (so 1024 = 2 x 512, 577 rows = 1 block).
template <class T>
struct blocking {
    static constexpr int MR = tile_shape<T>::MR;
    static constexpr int NR = tile_shape<T>::NV * simd<T>::lanes;
#if defined(ALIGNGPT_GEMM_KC)  // tuning knobs for experiments
    static constexpr index_t KC = ALIGNGPT_GEMM_KC;
#else
    static constexpr index_t KC = 512;  // B panel KC x NR: 64 KiB (L2, streamed to L1 by the prefetchers)
#endif
#if defined(ALIGNGPT_GEMM_ABLOCK)
    static constexpr index_t A_bytes = ALIGNGPT_GEMM_ABLOCK;
#else
    static constexpr index_t A_bytes = 1280 * 1024;  // A block MC x KC in the 2 MiB L2
#endif
#if defined(ALIGNGPT_GEMM_BBLOCK)
    static constexpr index_t B_bytes = ALIGNGPT_GEMM_BBLOCK;
#else
    static constexpr index_t B_bytes = 2 << 20;  // gemm's shared packed B block KC x NC (L3)
#endif
};

/// Block size for cutting n into near-equal blocks of at most maxb, rounded up to a multiple of align.
inline index_t balanced_block(index_t n, index_t maxb, index_t align) {
    maxb = std::max(maxb / align * align, align);
    const index_t blocks = (n + maxb - 1) / maxb;
    const index_t b = (n + blocks - 1) / std::max<index_t>(blocks, 1);
    return std::max((b + align - 1) / align * align, align);
}

/// Scratch memory for packed panels: 64-byte aligned, uninitialised (packing writes all of it).
/// One grow-only buffer per thread, element type and Slot (0: A block, 1: linear_packed's widened panel,
/// 2: gemm's shared B blocks), kept for the
/// thread's life, so a call does not pay mmap + page faults for ~1 MiB each time (OpenMP reuses
/// its threads). Not re-entrant per slot: nothing inside a task calls gemm again.
template <class T, int Slot>
struct scratch {
    T* p;
    explicit scratch(index_t n) {
        struct buffer {
            T* p = nullptr;
            std::size_t bytes = 0;
            ~buffer() { std::free(p); }
        };
        thread_local buffer buf;
        const std::size_t bytes = ((std::size_t(std::max<index_t>(n, 1)) * sizeof(T) + 63) / 64) * 64;
        if (bytes > buf.bytes) {
            std::free(buf.p);
            buf.p = static_cast<T*>(std::aligned_alloc(64, bytes));
            buf.bytes = buf.p ? bytes : 0;
            if (!buf.p) throw std::bad_alloc();
        }
        p = buf.p;
    }
    T* get() const { return p; }
};

/// How the accumulators start: +0, one row s[0..NR) for every row (the bias), or the running C.
enum class start { zero, row, load };

/// Prefetch hints (no effect on results; compiled out on the scalar path).
inline void prefetch_l1(const void* p) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
#else
    (void)p;
#endif
}
inline void prefetch_l2(const void* p) {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
    _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1);
#else
    (void)p;
#endif
}
/// Prefetches lines [first, first + count) of the `bytes` at p into L2.
inline void prefetch_lines_l2(const void* p, std::size_t bytes, std::size_t first, std::size_t count) {
    const std::size_t lines = (bytes + 63) / 64;
    for (std::size_t l = first; l < std::min(lines, first + count); l++)
        prefetch_l2(static_cast<const char*>(p) + 64 * l);
}

/// acc(MR x NR) = start; for k < kc: acc[r][:] = fma(a[k*MR + r], b[k*ldb + 0..NR), acc[r][:]);
/// C = acc.  a: packed A panel (k-major, MR per k); b: B panel rows with stride ldb.
/// c_next (may be null): the C tile of the next call (same ldc), prefetched during the first
/// 2*MR steps of k so that its running values are in L1 when that call starts.
/// R (<= MR) is the number of rows computed: the last row tile of a block may have fewer.
template <class T, int R = tile_shape<T>::MR>
inline void micro_kernel(index_t kc, const T* __restrict a, const T* __restrict b, index_t ldb, T* __restrict c,
                         index_t ldc, start st, const T* srow, const T* c_next = nullptr) {
    using S = simd<T>;
    using V = typename S::V;
    constexpr int MR = R, AS = tile_shape<T>::MR, NV = tile_shape<T>::NV, L = S::lanes;  // AS: A panel stride
    constexpr int line = 64 / int(sizeof(T));  // elements per cache line
    constexpr int lines_per_row = (NV * L + line - 1) / line;
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
    // One step of k: the only arithmetic, one fma per (row, column).
    auto step = [&](const T* ak, const T* bk) __attribute__((always_inline)) {
        V bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = S::load(bk + v * L);
        prefetch_l1(ak + 8 * AS);
        for (int r = 0; r < MR; r++) {
            const V av = S::set1(ak[r]);
            for (int v = 0; v < NV; v++) acc[r][v] = S::fma(av, bv[v], acc[r][v]);
        }
    };
    index_t k = 0;
    if (c_next) {
        const index_t kp = std::min<index_t>(kc, index_t(AS) * lines_per_row);
        for (; k < kp; k++) {
            prefetch_l1(c_next + (k / lines_per_row) * ldc + (k % lines_per_row) * line);
            step(a + k * AS, b + k * ldb);
        }
    }
    for (; k < kc; k++) step(a + k * AS, b + k * ldb);
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) S::store(c + r * ldc + v * L, acc[r][v]);
}

/// micro_kernel<T, R> for R = 1 .. MR, indexed by R - 1.
template <class T>
struct row_kernels {
    using fn = void (*)(index_t, const T*, const T*, index_t, T*, index_t, start, const T*, const T*);
    template <std::size_t... I>
    static constexpr std::array<fn, sizeof...(I)> make(std::index_sequence<I...>) {
        return {&micro_kernel<T, int(I) + 1>...};
    }
    static constexpr std::array<fn, tile_shape<T>::MR> table = make(std::make_index_sequence<tile_shape<T>::MR>{});
};

/// The micro-kernel on a tile with mr <= MR valid rows and nr <= NR valid columns. Full-width
/// tiles run micro_kernel<T, mr> in place; a narrow tile (the last columns of C) runs on a local
/// copy, and only the valid part is written back. Same fma chains either way.
template <class T>
inline void micro_kernel_edge(index_t kc, const T* a, const T* b, index_t ldb, T* c, index_t ldc, start st,
                              const T* srow, index_t mr, index_t nr, const T* c_next) {
    constexpr int MR = blocking<T>::MR, NR = blocking<T>::NR;
    if (nr == NR) return row_kernels<T>::table[mr - 1](kc, a, b, ldb, c, ldc, st, srow, c_next);
    alignas(64) T t[MR * NR];
    for (index_t r = 0; r < MR; r++)
        for (index_t j = 0; j < NR; j++)
            t[r * NR + j] = r >= mr || j >= nr   ? T(0)
                            : st == start::load ? c[r * ldc + j]
                            : st == start::row  ? srow[j]
                                                : T(0);
    micro_kernel(kc, a, b, ldb, t, NR, start::load, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr));
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
                // Rows are short runs (kc values) far apart: the hardware prefetchers barely start on
                // one before the next, so the row 4 ahead is requested now.
                if (i0 + r + 4 < mc)
                    for (index_t l = 0; l < kc * index_t(sizeof(T)); l += 64)
                        prefetch_l2(reinterpret_cast<const char*>(src + 4 * rs) + l);
                for (index_t k = 0; k < kc; k++) p[k * MR + r] = src[k];
            }
        } else {
            for (index_t k = 0; k < kc; k++)
                for (index_t r = 0; r < MR; r++) p[k * MR + r] = r < mr ? A[(i0 + r) * rs + k * cs] : T(0);
        }
    }
}

#if defined(__AVX512F__)
/// out[k*ldo + j] = in[j*ldi + k] for j, k < 16 (floats): 16 row loads, three rounds of shuffles.
/// (maskz forms with all-ones masks: the same shuffles, without GCC 12's false
/// -Wmaybe-uninitialized from the _mm512_undefined_* inside the unmasked intrinsics)
inline void transpose_16x16(const float* in, index_t ldi, float* out, index_t ldo) {
    auto unpacklo = [](__m512 a, __m512 b) { return _mm512_maskz_unpacklo_ps(0xFFFF, a, b); };
    auto unpackhi = [](__m512 a, __m512 b) { return _mm512_maskz_unpackhi_ps(0xFFFF, a, b); };
    auto lo64 = [](__m512 a, __m512 b) {
        return _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, _mm512_castps_pd(a), _mm512_castps_pd(b)));
    };
    auto hi64 = [](__m512 a, __m512 b) {
        return _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, _mm512_castps_pd(a), _mm512_castps_pd(b)));
    };
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(in + i * ldi);
    // Within each 128-bit lane: a 4 x 4 transpose of every 4 rows (rows 4g..4g+3 -> t[4g + c]:
    // lane L of t[4g + c] holds column 4L + c of those rows).
    for (int g = 0; g < 16; g += 4) {
        const __m512 ab_lo = unpacklo(r[g], r[g + 1]), ab_hi = unpackhi(r[g], r[g + 1]);
        const __m512 cd_lo = unpacklo(r[g + 2], r[g + 3]), cd_hi = unpackhi(r[g + 2], r[g + 3]);
        t[g] = lo64(ab_lo, cd_lo);
        t[g + 1] = hi64(ab_lo, cd_lo);
        t[g + 2] = lo64(ab_hi, cd_hi);
        t[g + 3] = hi64(ab_hi, cd_hi);
    }
    // Across lanes: output row 4L + c gathers lane L of t[c], t[4 + c], t[8 + c], t[12 + c].
    auto lanes = [](__m512 a, __m512 b, auto imm) { return _mm512_maskz_shuffle_f32x4(0xFFFF, a, b, decltype(imm)::value); };
    using lo_pairs = std::integral_constant<int, 0x44>;  // lanes 0, 1 of a, then of b
    using hi_pairs = std::integral_constant<int, 0xEE>;  // lanes 2, 3 of a, then of b
    using evens = std::integral_constant<int, 0x88>;     // lanes 0, 2 of a, then of b
    using odds = std::integral_constant<int, 0xDD>;      // lanes 1, 3 of a, then of b
    for (int c = 0; c < 4; c++) {
        const __m512 x0 = lanes(t[c], t[4 + c], lo_pairs{}), x1 = lanes(t[c], t[4 + c], hi_pairs{});
        const __m512 x2 = lanes(t[8 + c], t[12 + c], lo_pairs{}), x3 = lanes(t[8 + c], t[12 + c], hi_pairs{});
        _mm512_storeu_ps(out + (0 + c) * ldo, lanes(x0, x2, evens{}));
        _mm512_storeu_ps(out + (4 + c) * ldo, lanes(x0, x2, odds{}));
        _mm512_storeu_ps(out + (8 + c) * ldo, lanes(x1, x3, evens{}));
        _mm512_storeu_ps(out + (12 + c) * ldo, lanes(x1, x3, odds{}));
    }
}
#endif

/// Packs one panel of B: out[k*W + j] = B(k, j) for k < kc, j < nr; columns nr..W-1 are 0.
/// B points at the panel's first element. When B runs along k in memory (rs == 1, B = W^T of a
/// linear) the copy is a transpose: 16 x 16 blocks in registers (AVX-512, float), else done in
/// 16 x W tiles so reads and writes stay in a few lines.
template <class T, class Src>
inline void pack_b_panel(index_t kc, index_t nr, const Src* B, index_t rs, index_t cs, T* out, index_t W) {
    if (cs == 1) {
        for (index_t k = 0; k < kc; k++)
            for (index_t j = 0; j < W; j++) out[k * W + j] = j < nr ? T(B[k * rs + j]) : T(0);
        return;
    }
    index_t k_done = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float> && std::is_same_v<Src, float>) {
        if (rs == 1 && nr == W && W % 16 == 0) {
            k_done = kc / 16 * 16;
            for (index_t k0 = 0; k0 < k_done; k0 += 16)
                for (index_t j0 = 0; j0 < W; j0 += 16) transpose_16x16(B + j0 * cs + k0, cs, out + k0 * W + j0, W);
        }
    }
#endif
    for (index_t k0 = k_done; k0 < kc; k0 += 16) {
        const index_t k1 = std::min(kc, k0 + 16);
        for (index_t j = 0; j < nr; j++) {
            const Src* src = B + j * cs;
            for (index_t k = k0; k < k1; k++) out[k * W + j] = T(src[k * rs]);
        }
        for (index_t k = k0; k < k1; k++)
            for (index_t j = nr; j < W; j++) out[k * W + j] = T(0);
    }
}

/// The C tiles of rows [ic, ic + mc) and panels [q0, q1) for one block of kc steps of k. `a` holds
/// those rows of A packed (pack_a); panel q is the W columns q*W .. q*W + W-1 (W a multiple of NR):
///   panel(q)               -> const T*: its kc x W block, k-major, row stride W
///   prefetch(q, l0, n)     -> hints lines l0 .. l0+n-1 of panel q's block (kc * W values)
/// st says how the chains start (the first K block) or continue (start::load).
template <class T, class Panel, class Prefetch>
void block_kernel(index_t ic, index_t mc, index_t kc, const T* a, index_t q0, index_t q1, index_t N, index_t W,
                  T* C, index_t ldc, start st, const T* bias, Panel&& panel, Prefetch&& prefetch) {
    constexpr int MR = blocking<T>::MR, NR = blocking<T>::NR;
    const index_t tiles = (mc + MR - 1) / MR;
    for (index_t q = q0; q < q1; q++) {
        const T* b = panel(q);
        // While this panel is in use, the next one is fetched into L2, a few lines per tile.
        const std::size_t lines = std::size_t(kc * W) * sizeof(T) / 64;
        const std::size_t per_tile = (lines + std::size_t(tiles * (W / NR)) - 1) / std::size_t(tiles * (W / NR));
        std::size_t t = 0;
        for (index_t js = 0; js < W; js += NR) {
            const index_t j = q * W + js, nr = std::min<index_t>(NR, N - j);
            if (nr <= 0) break;
            for (index_t i = 0; i < mc; i += MR, t++) {
                if (q + 1 < q1) prefetch(q + 1, t * per_tile, per_tile);
                if (i + 2 * MR < mc)  // the C tile after next: into L2 now, into L1 by c_next
                    for (index_t r = 0; r < MR; r++)
                        for (index_t l = 0; l < NR * index_t(sizeof(T)); l += 64)
                            prefetch_l2(reinterpret_cast<const char*>(C + (ic + i + 2 * MR + r) * ldc + j) + l);
                T* c = C + (ic + i) * ldc + j;
                const T* c_next = i + MR < mc                       ? c + MR * ldc
                                  : j + NR < std::min(q1 * W, N) ? C + ic * ldc + j + NR
                                                                  : nullptr;
                micro_kernel_edge(kc, a + i * kc, b + js, W, c, ldc, st, st == start::row ? bias + j : nullptr,
                                  std::min<index_t>(MR, mc - i), nr, c_next);
            }
        }
    }
}

/// How the chains of the K block starting at pc begin: from c0 for the first block, else from C.
inline start block_start(index_t pc, gemm_init init) {
    return pc > 0                     ? start::load
           : init == gemm_init::zero ? start::zero
           : init == gemm_init::bias ? start::row
                                     : start::load;
}

/// Rows per A block: near-equal blocks of at most A_bytes for kc columns, whole MR tiles.
template <class T>
index_t a_block_rows(index_t rows, index_t kc) {
    return balanced_block(rows, blocking<T>::A_bytes / (kc * index_t(sizeof(T))), blocking<T>::MR);
}

/// The loop nest of one thread task on prepacked B (linear_packed): rows [m0, m1) and panels
/// [q0, q1) of C. panel(q, pc, kc) -> rows pc .. pc+kc-1 of panel q (k-major, row stride W);
/// prefetch(q, pc, kc, l0, n) hints lines of that block's source.
template <class T, class Panel, class Prefetch>
void task_loop(index_t m0, index_t m1, index_t q0, index_t q1, index_t N, index_t K, index_t W, const T* A,
               index_t rs_a, index_t cs_a, T* C, index_t ldc, gemm_init init, const T* bias, Panel&& panel,
               Prefetch&& prefetch) {
    using BL = blocking<T>;
    constexpr int MR = BL::MR;
    if (m1 <= m0 || q1 <= q0) return;
    const index_t kb = balanced_block(K, BL::KC, 8), mb = a_block_rows<T>(m1 - m0, std::min(kb, K));
    scratch<T, 0> abuf(std::min(mb, (m1 - m0 + MR - 1) / MR * MR) * std::min(kb, K));
    for (index_t pc = 0; pc < K; pc += kb) {
        const index_t kc = std::min(kb, K - pc);
        for (index_t ic = m0; ic < m1; ic += mb) {
            const index_t mc = std::min(mb, m1 - ic);
            pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, abuf.get());
            block_kernel(ic, mc, kc, abuf.get(), q0, q1, N, W, C, ldc, block_start(pc, init), bias,
                         [&](index_t q) { return panel(q, pc, kc); },
                         [&](index_t q, std::size_t l0, std::size_t n) { prefetch(q, pc, kc, l0, n); });
        }
    }
}

/// Splits C into tm x tn thread tasks (whole MR rows / `unit` columns each); a pure function of
/// the sizes and the thread count, and no output belongs to two tasks. Of the splits with
/// tm * tn == threads it takes the one whose busiest task does the least work: its tiles plus
/// packing its rows of A (each task packs the A rows it uses; about half a tile's work per MR
/// rows), so large M is split by rows (A packed once in all) and small M by columns.
struct task_grid {
    index_t tm = 1, tn = 1, mu = 0, nu = 0;
    task_grid(index_t M, index_t N, index_t K, index_t MR, index_t unit, int threads) {
        mu = (M + MR - 1) / MR;
        nu = (N + unit - 1) / unit;
        if (threads <= 1 || double(M) * double(N) * double(K) < double(1 << 18) || mu == 0 || nu == 0) return;
        index_t best = -1;
        for (index_t n = 1; n <= threads; n++) {
            const index_t m = threads / n;
            if (threads % n != 0 || m > mu || n > nu) continue;
            const index_t cost = (mu + m - 1) / m * (2 * ((nu + n - 1) / n) + 1);
            if (best < 0 || cost < best) best = cost, tm = m, tn = n;
        }
        if (best < 0) {  // no exact factorisation fits: fewer tasks than threads
            tn = std::min<index_t>(threads, nu);
            tm = std::max<index_t>(1, std::min<index_t>(threads / tn, mu));
        }
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

}  // namespace detail

/// C = c0 + A B as defined above. Threads split C into output tiles; each element is one fma chain.
///
/// B is packed cooperatively, one block of kc x nc at a time (the team splits its panels, then
/// waits at a barrier), into one of two shared buffers, so the next block can be packed while a
/// slower thread still reads the last one. Each task packs only its own rows of A, once per K
/// block when they fit in one A block (the common case), and every packed B block is read by
/// every task that needs it: B and A are each copied about once per call, as in OpenBLAS and BLIS.
template <class T>
void gemm(const backend::cpu&, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a,
          const T* B, index_t rs_b, index_t cs_b, T* C, index_t ldc, gemm_init init = gemm_init::zero,
          const T* bias = nullptr) {
    gemm_check("gemm", M, N, K, init, bias);
    if (M == 0 || N == 0) return;
    if (K == 0) return detail::gemm_fill_init(M, N, C, ldc, init, bias);
    using BL = detail::blocking<T>;
    constexpr index_t MR = BL::MR, NR = BL::NR;
    const detail::task_grid grid(M, N, K, MR, NR, max_threads());
    const index_t tasks = grid.tasks();
    const index_t kb = std::min(K, detail::balanced_block(K, BL::KC, 8));
    const index_t nb = std::min((N + NR - 1) / NR * NR,
                                detail::balanced_block(N, std::max<index_t>(NR, BL::B_bytes / (kb * index_t(sizeof(T)))), NR));
    const index_t K_blocks = (K + kb - 1) / kb, N_blocks = (N + nb - 1) / nb;
    const int buffers = tasks > 1 && K_blocks * N_blocks > 1 ? 2 : 1;
    detail::scratch<T, 2> bbuf(buffers * kb * nb);  // the calling thread's; shared by its team
    T* const bshared = bbuf.get();
#if defined(_OPENMP)
#pragma omp parallel num_threads(int(tasks)) if (tasks > 1)
#endif
    {
        const index_t id = thread_num(), team = team_size();
        // Task id is this thread's (the runtime may give a smaller team: then it loops over tasks).
        // When it is the only one and its rows fit one A block, they are packed once per K block.
        index_t m0 = 0, m1 = 0, n0, n1;
        grid.range(id, MR, NR, M, N, m0, m1, n0, n1);
        const bool keep_a = team == tasks && m1 > m0 && m1 - m0 <= detail::a_block_rows<T>(m1 - m0, kb);
        const index_t a_max = std::max(MR, BL::A_bytes / (kb * index_t(sizeof(T))) / MR * MR);  // >= any block
        detail::scratch<T, 0> abuf(std::min(a_max, (M + MR - 1) / MR * MR) * kb);
        index_t block = 0;
        for (index_t pc = 0; pc < K; pc += kb) {
            const index_t kc = std::min(kb, K - pc);
            const detail::start st = detail::block_start(pc, init);
            if (keep_a) detail::pack_a(m1 - m0, kc, A + m0 * rs_a + pc * cs_a, rs_a, cs_a, abuf.get());
            for (index_t jc = 0; jc < N; jc += nb, block++) {
                const index_t ncb = std::min(nb, N - jc), panels = (ncb + NR - 1) / NR, qj = jc / NR;
                T* bp = bshared + (block % buffers) * kb * nb;
                for (index_t p = id * panels / team; p < (id + 1) * panels / team; p++)
                    detail::pack_b_panel(kc, std::min(NR, ncb - p * NR), B + pc * rs_b + (jc + p * NR) * cs_b, rs_b,
                                         cs_b, bp + p * kc * NR, NR);
                team_barrier();  // the block is complete, and the other buffer is free again
                auto panel = [&](index_t q) { return static_cast<const T*>(bp + (q - qj) * kc * NR); };
                auto prefetch = [&](index_t q, std::size_t l0, std::size_t n) {
                    detail::prefetch_lines_l2(panel(q), std::size_t(kc * NR) * sizeof(T), l0, n);
                };
                for (index_t t = id; t < tasks; t += team) {
                    // Task t's rows, and its share of this block's panels (so a column split
                    // keeps every thread busy on every block).
                    index_t r0, r1, c0, c1;
                    grid.range(t, MR, NR, M, N, r0, r1, c0, c1);
                    const index_t b = t % grid.tn;
                    const index_t q0 = qj + b * panels / grid.tn, q1 = qj + (b + 1) * panels / grid.tn;
                    if (r1 <= r0 || q1 <= q0) continue;
                    if (keep_a) {
                        detail::block_kernel(r0, r1 - r0, kc, abuf.get(), q0, q1, N, NR, C, ldc, st, bias, panel,
                                             prefetch);
                        continue;
                    }
                    const index_t rb = detail::a_block_rows<T>(r1 - r0, kb);
                    for (index_t ic = r0; ic < r1; ic += rb) {
                        const index_t mc = std::min(rb, r1 - ic);
                        detail::pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, abuf.get());
                        detail::block_kernel(ic, mc, kc, abuf.get(), q0, q1, N, NR, C, ldc, st, bias, panel, prefetch);
                    }
                }
            }
        }
    }
}

/// A batch of independent products with the same shapes: C_b = c0_b + A_b B_b for b < batch, the
/// operands of item b at A + b*batch_a, B + b*batch_b, C + b*batch_c (a batch stride of 0 shares
/// the operand, e.g. one weight for every item). Each C_b has exactly the bits gemm() gives it alone.
template <class T>
void gemm_batched(const backend::cpu& be, index_t batch, index_t M, index_t N, index_t K, const T* A, index_t rs_a,
                  index_t cs_a, index_t batch_a, const T* B, index_t rs_b, index_t cs_b, index_t batch_b, T* C,
                  index_t ldc, index_t batch_c, gemm_init init = gemm_init::zero, const T* bias = nullptr) {
    ALIGNGPT_CHECK(batch >= 0, "gemm_batched: negative batch ", batch);
    for (index_t b = 0; b < batch; b++)
        gemm(be, M, N, K, A + b * batch_a, rs_a, cs_a, B + b * batch_b, rs_b, cs_b, C + b * batch_c, ldc, init, bias);
}

}  // namespace aligngpt::ops
