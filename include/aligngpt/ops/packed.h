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
//
// A device backend keeps its own copy of the panels (mirror(): backend/cuda.h uploads them on
// first use), owned by the packed_weight, so the copy lives exactly as long as the weights.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

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

    /// The copy of the panels that device context `owner` made with make() on first use (a
    /// shared_ptr to its memory), kept until these weights are destroyed.
    template <class Make>
    std::shared_ptr<const void> mirror(const void* owner, Make&& make) const {
        std::lock_guard<std::mutex> g(mirrors_->mu);
        for (const auto& [o, copy] : mirrors_->copies)
            if (o == owner) return copy;
        std::shared_ptr<const void> copy = make();
        mirrors_->copies.emplace_back(owner, copy);
        return copy;
    }

    /// out[0..K) = the widened row W[j, :].
    void unpack_row(index_t j, float* out) const {
        ALIGNGPT_CHECK(j >= 0 && j < N_, "packed_weight::unpack_row: row ", j, " outside [0, ", N_, ")");
        const S* p = panel(j / panel_width) + j % panel_width;
        for (index_t k = 0; k < K_; k++) out[k] = widen(p[k * panel_width]);
    }

private:
    struct mirror_list {
        std::mutex mu;
        std::vector<std::pair<const void*, std::shared_ptr<const void>>> copies;
    };
    index_t N_ = 0, K_ = 0;
    backend::cpu::buffer<S> data_;
    std::shared_ptr<mirror_list> mirrors_ = std::make_shared<mirror_list>();
};

}  // namespace aligngpt::ops

#define ALIGNGPT_ISA_KERNELS "aligngpt/ops/kernels/packed.inc"
#include "aligngpt/ops/isa_regions.inc"

namespace aligngpt::ops {

/// Y[M, N] = X[M, K] W^T (+ bias[N]), N = W.N(), K = W.K(). X must be M x W.K() row-major (the
/// API takes M only; the caller owns that shape), Y is M x W.N() row-major, bias may be null.
/// Bit-identical to gemm_reference(M, N, K, X, K, 1, float(W)^T, 1, K, Y, N, bias ? init::bias :
/// init::zero, bias) for any thread count and SIMD path; M == 1 streams the panels (GEMV).
template <class S>
void linear_packed(const backend::cpu&, float* Y, const float* X, const packed_weight<S>& W, const float* bias, index_t M) {
    ALIGNGPT_CHECK(M >= 0, "linear_packed: negative M=", M);
    const index_t N = W.N(), K = W.K();
    if (M == 0 || N == 0) return;
    ALIGNGPT_CHECK(Y != nullptr && (X != nullptr || K == 0), "linear_packed: null X or Y for M=", M);
    if (K == 0) return detail::gemm_fill_init(M, N, Y, N, bias ? gemm_init::bias : gemm_init::zero, bias);
    ALIGNGPT_ISA_DISPATCH(linear_packed<S>, Y, X, W, bias, M)
}

/// W[N, K] = float(packed rows), exact: the input gradient dX = dY W of a packed linear uses it.
template <class S>
void packed_unpack(const backend::cpu&, float* W, const packed_weight<S>& pw) {
    ALIGNGPT_OMP_FOR
    for (index_t j = 0; j < pw.N(); j++) pw.unpack_row(j, W + j * pw.K());
}

}  // namespace aligngpt::ops
