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

#include "aligngpt/backend/cpu.h"
#include "aligngpt/config.h"
#include "aligngpt/ops/isa.h"

namespace aligngpt::ops {

enum class gemm_init { zero, bias, accumulate };

/// The definition: three plain loops, one fma per term, k innermost and in order.
template <class T>
void gemm_reference(index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B, index_t rs_b,
                    index_t cs_b, T* C, index_t ldc, gemm_init init, const T* bias) {
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

/// Block size for cutting n into near-equal blocks of at most maxb, rounded up to a multiple of align.
inline index_t balanced_block(index_t n, index_t maxb, index_t align) {
    maxb = std::max(maxb / align * align, align);
    const index_t blocks = (n + maxb - 1) / maxb;
    const index_t b = (n + blocks - 1) / std::max<index_t>(blocks, 1);
    return std::max((b + align - 1) / align * align, align);
}

/// Scratch memory for packed panels: 64-byte aligned, uninitialised (packing writes all of it).
/// One grow-only buffer per thread, element type and Slot (0: A block, 1: linear_packed's widened panel,
/// 2: gemm's shared B blocks, 3: attention's block of scores without a backward), kept for the
/// thread's life, so a call does not pay mmap + page faults for ~1 MiB each time (OpenMP reuses
/// its threads). Not re-entrant per slot: no code holding a slot calls code that takes the same one.
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
inline void prefetch_l1(const void* p) { __builtin_prefetch(p, 0, 3); }
inline void prefetch_l2(const void* p) { __builtin_prefetch(p, 0, 2); }
/// Prefetches lines [first, first + count) of the `bytes` at p into L2.
inline void prefetch_lines_l2(const void* p, std::size_t bytes, std::size_t first, std::size_t count) {
    const std::size_t lines = (bytes + 63) / 64;
    for (std::size_t l = first; l < std::min(lines, first + count); l++) prefetch_l2(static_cast<const char*>(p) + 64 * l);
}

/// How the chains of the K block starting at pc begin: from c0 for the first block, else from C.
inline start block_start(index_t pc, gemm_init init) {
    return pc > 0 ? start::load : init == gemm_init::zero ? start::zero : init == gemm_init::bias ? start::row : start::load;
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

}  // namespace aligngpt::ops

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/gemm.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

/// C = c0 + A B as defined above, on the active instruction set (ops/isa.h; kernels/gemm.inc has
/// the loop nest). Threads split C into output tiles; each element is one fma chain.
template <class T>
void gemm(const backend::cpu&, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B, index_t rs_b,
          index_t cs_b, T* C, index_t ldc, gemm_init init = gemm_init::zero, const T* bias = nullptr) {
    gemm_check("gemm", M, N, K, init, bias);
    if (M == 0 || N == 0) return;
    if (K == 0) return detail::gemm_fill_init(M, N, C, ldc, init, bias);
    ALIGNGPT_ISA_DISPATCH(gemm<T>, M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, init, bias)
}

/// A batch of independent products with the same shapes: C_b = c0_b + A_b B_b for b < batch, the
/// operands of item b at A + b*batch_a, B + b*batch_b, C + b*batch_c (a batch stride of 0 shares
/// the operand, e.g. one weight for every item). Each C_b has exactly the bits gemm() gives it alone.
template <class T>
void gemm_batched(const backend::cpu& be, index_t batch, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a,
                  index_t batch_a, const T* B, index_t rs_b, index_t cs_b, index_t batch_b, T* C, index_t ldc, index_t batch_c,
                  gemm_init init = gemm_init::zero, const T* bias = nullptr) {
    ALIGNGPT_CHECK(batch >= 0, "gemm_batched: negative batch ", batch);
    for (index_t b = 0; b < batch; b++)
        gemm(be, M, N, K, A + b * batch_a, rs_a, cs_a, B + b * batch_b, rs_b, cs_b, C + b * batch_c, ldc, init, bias);
}

}  // namespace aligngpt::ops
