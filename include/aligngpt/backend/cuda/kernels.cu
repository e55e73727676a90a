// backend::cuda's kernels in exact mode (backend/cuda.h): each launches one thread per work item
// of backend/cuda/exact.h, so every output has the CPU kernel's order of operations and bits.
// The products (gemm, linear) use a tiled kernel whose every output element is still one fma
// chain over k ascending (gemm.h's definition). Compiled by nvcc into aligngpt::cuda.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "aligngpt/backend/cuda.h"
#include "aligngpt/backend/cuda/exact.h"
#include "aligngpt/backend/cuda/launch.cuh"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/ops/embedding.h"

namespace aligngpt::backend {

using cuda_detail::for_each_item;

// --- GEMM --------------------------------------------------------------------------------------

namespace cuda_detail {

/// C tile of BM x BN per block of (BM/TM)(BN/TN) threads, each thread TM x TN outputs. The k loop
/// walks the K tiles in order and, within a tile, k ascending, so output (i, j) gets exactly
/// acc = fma(A(i,k), B(k,j), acc) for k = 0..K-1 from c0: gemm_reference's chain. Operand tiles
/// are staged in shared memory; entries past K are never used (a padded fma(0, b, acc) could turn
/// -0 into +0).
template <class T, int BM, int BN, int BK, int TM, int TN>
__global__ void gemm_exact_kernel(index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B,
                                  index_t rs_b, index_t cs_b, T* C, index_t ldc, ops::gemm_init init, const T* bias) {
    constexpr int threads = (BM / TM) * (BN / TN);
    __shared__ T As[BK][BM + 1];
    __shared__ T Bs[BK][BN + 1];
    const int tid = int(threadIdx.x), tr = tid / (BN / TN), tc = tid % (BN / TN);
    const index_t i0 = index_t(blockIdx.y) * BM, j0 = index_t(blockIdx.x) * BN;

    T acc[TM][TN];
    for (int r = 0; r < TM; r++)
        for (int c = 0; c < TN; c++) {
            const index_t i = i0 + tr + r * (BM / TM), j = j0 + tc + c * (BN / TN);
            acc[r][c] = T(0);
            if (i < M && j < N)
                acc[r][c] = init == ops::gemm_init::zero ? T(0) : init == ops::gemm_init::bias ? bias[j] : C[i * ldc + j];
        }

    for (index_t k0 = 0; k0 < K; k0 += BK) {
        const int kn = int(K - k0 < BK ? K - k0 : BK);
        // Loads run along whichever index is contiguous in memory, so a warp reads consecutive words.
        for (int e = tid; e < BM * BK; e += threads) {
            const int ii = cs_a == 1 ? e / BK : e % BM, kk = cs_a == 1 ? e % BK : e / BM;
            const index_t gi = i0 + ii, gk = k0 + kk;
            As[kk][ii] = gi < M && gk < K ? A[gi * rs_a + gk * cs_a] : T(0);
        }
        for (int e = tid; e < BN * BK; e += threads) {
            const int jj = rs_b == 1 ? e / BK : e % BN, kk = rs_b == 1 ? e % BK : e / BN;
            const index_t gj = j0 + jj, gk = k0 + kk;
            Bs[kk][jj] = gj < N && gk < K ? B[gk * rs_b + gj * cs_b] : T(0);
        }
        __syncthreads();
        for (int kk = 0; kk < kn; kk++) {
            T a[TM], b[TN];
            for (int r = 0; r < TM; r++) a[r] = As[kk][tr + r * (BM / TM)];
            for (int c = 0; c < TN; c++) b[c] = Bs[kk][tc + c * (BN / TN)];
            for (int r = 0; r < TM; r++)
                for (int c = 0; c < TN; c++) acc[r][c] = exact::fma_ieee(a[r], b[c], acc[r][c]);
        }
        __syncthreads();
    }

    for (int r = 0; r < TM; r++)
        for (int c = 0; c < TN; c++) {
            const index_t i = i0 + tr + r * (BM / TM), j = j0 + tc + c * (BN / TN);
            if (i < M && j < N) C[i * ldc + j] = acc[r][c];
        }
}

}  // namespace cuda_detail

namespace cuda_detail {

/// An operand X(a, b) = X[a*rs + b*cs] as cuBLAS's column-major X^T (rows_n x rows_t): stored as
/// is when cs == 1 (ld = rs >= rows_n), or as a column-major X that cuBLAS transposes when rs == 1
/// (ld = cs >= rows_t). False when neither fits or a size exceeds cuBLAS's int.
inline bool blas_operand(index_t rs, index_t cs, index_t rows_n, index_t rows_t, cublasOperation_t& op, int& ld) {
    constexpr index_t int_max = 0x7fffffff;
    if (cs == 1 && rs >= std::max<index_t>(rows_n, 1) && rs <= int_max) return op = CUBLAS_OP_N, ld = int(rs), true;
    if (rs == 1 && cs >= std::max<index_t>(rows_t, 1) && cs <= int_max) return op = CUBLAS_OP_T, ld = int(cs), true;
    return false;
}

template <class T>
cublasStatus_t blas_gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const T* alpha,
                         const T* a, int lda, const T* b, int ldb, const T* beta, T* c, int ldc) {
    if constexpr (std::is_same_v<T, float>)
        return cublasSgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    else
        return cublasDgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/// Fast mode: C = c0 + A B on cuBLAS. Row-major C (M x N, ldc) is column-major C^T = B^T A^T, so
/// B's view is cuBLAS's first operand and A's the second. False (nothing done) when the strides
/// do not map; the caller then runs the exact kernel.
template <class T>
bool gemm_blas(const cuda& be, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B, index_t rs_b,
               index_t cs_b, T* C, index_t ldc, ops::gemm_init init, const T* bias) {
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff || ldc > 0x7fffffff || ldc < N || K == 0) return false;
    cublasOperation_t op_a, op_b;
    int ld_a, ld_b;
    // A^T(k, i) = A[i*rs_a + k*cs_a] is K x M; B^T(j, k) = B[k*rs_b + j*cs_b] is N x K.
    if (!blas_operand(rs_a, cs_a, K, M, op_a, ld_a) || !blas_operand(rs_b, cs_b, N, K, op_b, ld_b)) return false;
    if (init == ops::gemm_init::bias)
        for_each_item(be, "gemm_bias_rows", M * N, [=] __device__(index_t e) { C[(e / N) * ldc + e % N] = bias[e % N]; });
    const T one = 1, beta = init == ops::gemm_init::zero ? T(0) : T(1);
    const cublasStatus_t st = blas_gemm<T>(static_cast<cublasHandle_t>(be.blas_handle()), op_b, op_a, int(N), int(M), int(K),
                                           &one, B, ld_b, A, ld_a, &beta, C, int(ldc));
    ALIGNGPT_CHECK(st == CUBLAS_STATUS_SUCCESS, "cuda backend: cuBLAS gemm of ", M, " x ", N, " x ", K, " failed (status ",
                   int(st), ")");
    be.launched("gemm (cuBLAS)");
    return true;
}

}  // namespace cuda_detail

template <class T>
void gemm(const cuda& be, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B, index_t rs_b,
          index_t cs_b, T* C, index_t ldc, ops::gemm_init init, const T* bias) {
    ops::gemm_check("gemm", M, N, K, init, bias);
    if (M == 0 || N == 0) return;
    if (be.gemm_mode() == cuda::mode::fast &&
        cuda_detail::gemm_blas(be, M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, init, bias))
        return;
    constexpr int BM = 64, BN = 64, BK = 16, TM = 4, TN = 4;
    const index_t gx = (N + BN - 1) / BN, gy = (M + BM - 1) / BM;
    ALIGNGPT_CHECK(gx <= 0x7fffffff && gy <= 65535, "cuda backend: gemm of ", M, " x ", N, " exceeds one grid");
    cuda_detail::gemm_exact_kernel<T, BM, BN, BK, TM, TN>
        <<<dim3(unsigned(gx), unsigned(gy)), (BM / TM) * (BN / TN), 0, static_cast<cudaStream_t>(be.stream())>>>(
            M, N, K, A, rs_a, cs_a, B, rs_b, cs_b, C, ldc, init, bias);
    be.launched("gemm");
}

template <class T>
void linear_forward(const cuda& be, T* Y, const T* X, const T* W, const T* b, index_t M, index_t N, index_t K) {
    gemm(be, M, N, K, X, K, index_t(1), W, index_t(1), K, Y, N, b ? ops::gemm_init::bias : ops::gemm_init::zero, b);
}

template <class T>
void linear_backward(const cuda& be, T* dX, T* dW, T* db, const T* dY, const T* X, const T* W, index_t M, index_t N, index_t K) {
    if (dX) gemm(be, M, K, N, dY, N, index_t(1), W, K, index_t(1), dX, K, ops::gemm_init::accumulate);
    if (dW) gemm(be, N, K, M, dY, index_t(1), N, X, K, index_t(1), dW, K, ops::gemm_init::accumulate);
    if (db) for_each_item(be, "linear_bias_grad", N, [=] __device__(index_t n) { exact::linear_bias_grad(n, db, dY, M, N); });
}

// --- elementwise -------------------------------------------------------------------------------

template <class T>
void add_forward(const cuda& be, T* y, const T* a, const T* b, index_t n) {
    for_each_item(be, "add_forward", n, [=] __device__(index_t i) { exact::add_forward(i, y, a, b); });
}
template <class T>
void add_backward(const cuda& be, T* da, T* db, const T* dy, index_t n) {
    for_each_item(be, "add_backward", n, [=] __device__(index_t i) { exact::add_backward(i, da, db, dy); });
}
template <class T>
void mul_forward(const cuda& be, T* y, const T* a, const T* b, index_t n) {
    for_each_item(be, "mul_forward", n, [=] __device__(index_t i) { exact::mul_forward(i, y, a, b); });
}
template <class T>
void mul_backward(const cuda& be, T* da, T* db, const T* dy, const T* a, const T* b, index_t n) {
    for_each_item(be, "mul_backward", n, [=] __device__(index_t i) { exact::mul_backward(i, da, db, dy, a, b); });
}
template <class T>
void scale_forward(const cuda& be, T* y, const T* x, T s, index_t n) {
    for_each_item(be, "scale_forward", n, [=] __device__(index_t i) { exact::scale_forward(i, y, x, s); });
}
template <class T>
void scale_backward(const cuda& be, T* dx, const T* dy, T s, index_t n) {
    for_each_item(be, "scale_backward", n, [=] __device__(index_t i) { exact::scale_backward(i, dx, dy, s); });
}
template <class T>
void add_row_forward(const cuda& be, T* y, const T* x, const T* r, index_t N, index_t C) {
    for_each_item(be, "add_row_forward", N * C, [=] __device__(index_t i) { exact::add_row_forward(i, y, x, r, C); });
}
template <class T>
void add_row_backward(const cuda& be, T* dx, T* dr, const T* dy, index_t N, index_t C) {
    if (dx) add_backward<T>(be, dx, nullptr, dy, N * C);
    if (dr)
        for_each_item(be, "add_row_backward", C, [=] __device__(index_t c) { exact::add_row_backward_column(c, dr, dy, N, C); });
}

// --- activations -------------------------------------------------------------------------------

template <class T>
void gelu_forward(const cuda& be, T* y, const T* x, index_t n) {
    for_each_item(be, "gelu_forward", n, [=] __device__(index_t i) { exact::gelu_forward(i, y, x); });
}
template <class T>
void gelu_backward(const cuda& be, T* dx, const T* dy, const T* x, index_t n) {
    for_each_item(be, "gelu_backward", n, [=] __device__(index_t i) { exact::gelu_backward(i, dx, dy, x); });
}
template <class T>
void quick_gelu_forward(const cuda& be, T* y, const T* x, index_t n) {
    for_each_item(be, "quick_gelu_forward", n, [=] __device__(index_t i) { exact::x_sigmoid_ax(i, y, x, T(1.702)); });
}
template <class T>
void quick_gelu_backward(const cuda& be, T* dx, const T* dy, const T* x, index_t n) {
    for_each_item(be, "quick_gelu_backward", n, [=] __device__(index_t i) { exact::quick_gelu_backward(i, dx, dy, x); });
}
template <class T>
void silu_forward(const cuda& be, T* y, const T* x, index_t n) {
    for_each_item(be, "silu_forward", n, [=] __device__(index_t i) { exact::x_sigmoid_ax(i, y, x, T(1)); });
}
template <class T>
void silu_backward(const cuda& be, T* dx, const T* dy, const T* x, index_t n) {
    for_each_item(be, "silu_backward", n, [=] __device__(index_t i) { exact::silu_backward(i, dx, dy, x); });
}
template <class T>
void swiglu_forward(const cuda& be, T* y, const T* g, const T* u, index_t n) {
    for_each_item(be, "swiglu_forward", n, [=] __device__(index_t i) { exact::swiglu_forward(i, y, g, u); });
}
template <class T>
void swiglu_backward(const cuda& be, T* dg, T* du, const T* dy, const T* g, const T* u, index_t n) {
    for_each_item(be, "swiglu_backward", n, [=] __device__(index_t i) { exact::swiglu_backward(i, dg, du, dy, g, u); });
}

// --- norms and softmax -------------------------------------------------------------------------

template <class T>
void rms_norm_forward(const cuda& be, T* y, T* rstd, const T* x, const T* g, index_t N, index_t C, T eps) {
    for_each_item(be, "rms_norm_forward", N,
                  [=] __device__(index_t n) { exact::rms_norm_forward_row(n, y, rstd, x, g, C, eps); });
}
template <class T>
void rms_norm_backward(const cuda& be, T* dx, T* dg, const T* dy, const T* x, const T* g, const T* rstd, index_t N, index_t C) {
    if (dx)
        for_each_item(be, "rms_norm_backward", N,
                      [=] __device__(index_t n) { exact::rms_norm_backward_row(n, dx, dy, x, g, rstd, C); });
    if (dg)
        for_each_item(be, "rms_norm_backward_weight", C,
                      [=] __device__(index_t i) { exact::rms_norm_backward_channel(i, dg, dy, x, rstd, N, C); });
}
template <class T>
void layer_norm_forward(const cuda& be, T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t N, index_t C, T eps) {
    for_each_item(be, "layer_norm_forward", N,
                  [=] __device__(index_t n) { exact::layer_norm_forward_row(n, y, mean, rstd, x, w, b, C, eps); });
}
template <class T>
void layer_norm_backward(const cuda& be, T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* mean, const T* rstd,
                         index_t N, index_t C) {
    if (dx)
        for_each_item(be, "layer_norm_backward", N,
                      [=] __device__(index_t n) { exact::layer_norm_backward_row(n, dx, dy, x, w, mean, rstd, C); });
    if (dw || db)
        for_each_item(be, "layer_norm_backward_weight", C,
                      [=] __device__(index_t i) { exact::layer_norm_backward_channel(i, dw, db, dy, x, mean, rstd, N, C); });
}
template <class T>
void softmax_forward(const cuda& be, T* p, const T* x, index_t N, index_t C) {
    for_each_item(be, "softmax_forward", N, [=] __device__(index_t n) { exact::softmax_forward_row(n, p, x, C); });
}
template <class T>
void softmax_backward(const cuda& be, T* dx, const T* dy, const T* p, index_t N, index_t C) {
    for_each_item(be, "softmax_backward", N, [=] __device__(index_t n) { exact::softmax_backward_row(n, dx, dy, p, C); });
}
template <class T>
void l2_normalize_forward(const cuda& be, T* y, T* norm, const T* x, index_t N, index_t C) {
    for_each_item(be, "l2_normalize_forward", N,
                  [=] __device__(index_t n) { exact::l2_normalize_forward_row(n, y, norm, x, C); });
}
template <class T>
void l2_normalize_backward(const cuda& be, T* dx, const T* dy, const T* y, const T* norm, index_t N, index_t C) {
    for_each_item(be, "l2_normalize_backward", N,
                  [=] __device__(index_t n) { exact::l2_normalize_backward_row(n, dx, dy, y, norm, C); });
}

// --- reductions, gathers, copies ---------------------------------------------------------------

template <class T>
void sum_forward(const cuda& be, T* y, const T* x, index_t outer, index_t D, index_t inner, bool mean) {
    for_each_item(be, "sum_forward", outer * inner, [=] __device__(index_t oi) { exact::sum_forward(oi, y, x, D, inner, mean); });
}
template <class T>
void sum_backward(const cuda& be, T* dx, const T* dy, index_t outer, index_t D, index_t inner, bool mean) {
    for_each_item(be, "sum_backward", outer * D * inner,
                  [=] __device__(index_t e) { exact::sum_backward(e, dx, dy, D, inner, mean); });
}

template <class T>
void embedding_forward(const cuda& be, T* y, const T* W, const std::int64_t* ids, index_t Tn, index_t V, index_t C) {
    ops::check_ids("embedding", ids, Tn, V);
    const auto d_ids = be.upload(ids, Tn);
    const std::int64_t* di = d_ids.data();
    for_each_item(be, "embedding_forward", Tn * C, [=] __device__(index_t e) { exact::embedding_forward(e, y, W, di, C); });
}
template <class T>
void embedding_backward(const cuda& be, T* dW, const T* dy, const std::int64_t* ids, index_t Tn, index_t V, index_t C,
                        std::int64_t padding_idx) {
    ops::check_ids("embedding backward", ids, Tn, V);
    std::vector<index_t> order, start;  // the CPU kernel's grouping, on the host where the ids are
    ops::embedding_groups(ids, Tn, order, start);
    const index_t G = index_t(start.size()) - 1;
    const auto d_ids = be.upload(ids, Tn);
    const auto d_order = be.upload(order.data(), Tn);
    const auto d_start = be.upload(start.data(), G + 1);
    const std::int64_t* di = d_ids.data();
    const index_t *o = d_order.data(), *s = d_start.data();
    for_each_item(be, "embedding_backward", G * C,
                  [=] __device__(index_t gc) { exact::embedding_backward(gc, dW, dy, di, o, s, C, padding_idx); });
}
template <class T>
void copy_block(const cuda& be, T* y, index_t Dy, index_t y_off, const T* x, index_t Dx, index_t x_off, index_t Dn, index_t outer,
                index_t inner, bool accumulate) {
    for_each_item(be, "copy_block", outer * Dn * inner,
                  [=] __device__(index_t e) { exact::copy_block(e, y, Dy, y_off, x, Dx, x_off, Dn, inner, accumulate); });
}
template <class T>
void transpose_copy(const cuda& be, T* y, const T* x, index_t P, index_t A, index_t M, index_t Bn, index_t Q, bool accumulate) {
    for_each_item(be, "transpose_copy", P * Bn * M * A * Q,
                  [=] __device__(index_t e) { exact::transpose_copy(e, y, x, A, M, Bn, Q, accumulate); });
}
template <class T>
void masked_mean_forward(const cuda& be, T* y, const T* x, const std::uint8_t* mask, const T* denom, index_t Bn, index_t Tn,
                         index_t H) {
    const auto d_mask = be.upload(mask, Bn * Tn);
    const auto d_denom = be.upload(denom, Bn);
    const std::uint8_t* m = d_mask.data();
    const T* d = d_denom.data();
    for_each_item(be, "masked_mean_forward", Bn * H,
                  [=] __device__(index_t bh) { exact::masked_mean_forward(bh, y, x, m, d, Tn, H); });
}
template <class T>
void masked_mean_backward(const cuda& be, T* dx, const T* dy, const std::uint8_t* mask, const T* denom, index_t Bn, index_t Tn,
                          index_t H) {
    const auto d_mask = be.upload(mask, Bn * Tn);
    const auto d_denom = be.upload(denom, Bn);
    const std::uint8_t* m = d_mask.data();
    const T* d = d_denom.data();
    for_each_item(be, "masked_mean_backward", Bn * Tn * H,
                  [=] __device__(index_t e) { exact::masked_mean_backward(e, dx, dy, m, d, Tn, H); });
}
template <class T>
void batched_matvec_forward(const cuda& be, T* y, const T* M, const T* v, index_t Bn, index_t J, index_t H) {
    for_each_item(be, "batched_matvec_forward", Bn * J,
                  [=] __device__(index_t bj) { exact::batched_matvec_forward(bj, y, M, v, J, H); });
}
template <class T>
void batched_matvec_backward(const cuda& be, T* dM, T* dv, const T* dy, const T* M, const T* v, index_t Bn, index_t J,
                             index_t H) {
    if (dM)
        for_each_item(be, "batched_matvec_backward_matrix", Bn * J * H,
                      [=] __device__(index_t e) { exact::batched_matvec_backward_matrix(e, dM, dy, v, J, H); });
    if (dv)
        for_each_item(be, "batched_matvec_backward_vector", Bn * H,
                      [=] __device__(index_t bh) { exact::batched_matvec_backward_vector(bh, dv, dy, M, J, H); });
}

// --- attention ---------------------------------------------------------------------------------

namespace cuda_detail {
/// The options' masks on the device, alive as long as this object.
struct device_mask {
    cuda::buffer<index_t> lengths;
    cuda::buffer<std::uint8_t> mask;
    exact::attention_mask view;
    device_mask(const cuda& be, const ops::attention_dims& d, const ops::attention_options& o) {
        view.causal = o.causal, view.past = d.past, view.Tk = d.Tk;
        if (!o.key_lengths.empty()) {
            lengths = be.upload(o.key_lengths.data(), index_t(o.key_lengths.size()));
            view.key_lengths = lengths.data();
        }
        if (!o.key_mask.empty()) {
            mask = be.upload(o.key_mask.data(), index_t(o.key_mask.size()));
            view.key_mask = mask.data();
        }
    }
};
}  // namespace cuda_detail

template <class T>
void attention_forward(const cuda& be, T* out, T* att, const T* q, const T* k, const T* v, const ops::attention_dims& d,
                       const ops::attention_options& o) {
    const index_t Tq = d.T, Tk = d.Tk, NH = d.NH, HS = d.HS, G = d.NH / d.NKV;
    const index_t C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T scale = T(d.scale);
    cuda::buffer<T> workspace = be.allocate<T>(att ? 0 : d.B * NH * Tq * Tk);  // att null: no backward keeps it
    if (!att) att = workspace.data();
    for (index_t b = 0; b < d.B; b++)  // pass 1: att_bh = q_bh k_g^T, as the CPU's gemm calls
        for (index_t h = 0; h < NH; h++)
            gemm(be, Tq, Tk, HS, q + b * Tq * C + h * HS, C, index_t(1), k + b * d.kv_rows * Ck + (h / G) * HS, index_t(1), Ck,
                 att + (b * NH + h) * Tq * Tk, Tk, ops::gemm_init::zero);
    const cuda_detail::device_mask m(be, d, o);
    const exact::attention_mask mv = m.view;
    for_each_item(be, "attention_softmax", d.B * NH * Tq,
                  [=] __device__(index_t r) { exact::attention_softmax_row(r, att, NH, Tq, Tk, scale, mv); });
    for (index_t b = 0; b < d.B; b++)  // pass 4: out_bh = p_bh v_g
        for (index_t h = 0; h < NH; h++)
            gemm(be, Tq, HS, Tk, att + (b * NH + h) * Tq * Tk, Tk, index_t(1), v + b * d.kv_rows * Ck + (h / G) * HS, Ck,
                 index_t(1), out + b * Tq * C + h * HS, C, ops::gemm_init::zero);
}

template <class T>
void attention_backward(const cuda& be, T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* att,
                        const ops::attention_dims& d, const ops::attention_options& o) {
    const index_t Tq = d.T, Tk = d.Tk, NH = d.NH, HS = d.HS, G = d.NH / d.NKV;
    const index_t C = NH * HS, Ck = index_t(d.NKV) * HS;
    const T scale = T(d.scale);
    const auto q_at = [&](index_t b, index_t h) { return q + b * Tq * C + h * HS; };
    const auto dout_at = [&](index_t b, index_t h) { return dout + b * Tq * C + h * HS; };
    const auto att_at = [&](index_t b, index_t h) { return att + (b * NH + h) * Tq * Tk; };
    const auto kv_at = [&](index_t b, index_t g) { return b * d.kv_rows * Ck + g * HS; };
    cuda::buffer<T> dS_buf = be.allocate<T>((dq || dk) ? d.B * NH * Tq * Tk : 0);
    T* dS = dS_buf.data();
    if (dq || dk) {
        for (index_t b = 0; b < d.B; b++)
            for (index_t h = 0; h < NH; h++)
                gemm(be, Tq, Tk, HS, dout_at(b, h), C, index_t(1), v + kv_at(b, h / G), index_t(1), Ck,
                     dS + (b * NH + h) * Tq * Tk, Tk, ops::gemm_init::zero);
        const cuda_detail::device_mask m(be, d, o);
        const exact::attention_mask mv = m.view;
        for_each_item(be, "attention_softmax_backward", d.B * NH * Tq,
                      [=] __device__(index_t r) { exact::attention_softmax_backward_row(r, dS, att, NH, Tq, Tk, mv); });
    }
    if (dq) {
        cuda::buffer<T> acc_buf = be.allocate<T>(Tq * HS);
        T* acc = acc_buf.data();
        for (index_t b = 0; b < d.B; b++)
            for (index_t h = 0; h < NH; h++) {
                gemm(be, Tq, HS, Tk, dS + (b * NH + h) * Tq * Tk, Tk, index_t(1), k + kv_at(b, h / G), Ck, index_t(1), acc, HS,
                     ops::gemm_init::zero);
                T* dq_bh = dq + b * Tq * C + h * HS;
                for_each_item(be, "attention_dq", Tq * HS,
                              [=] __device__(index_t e) { exact::add_rows(e, dq_bh, C, acc, HS, scale, true); });
            }
    }
    if (!dk && !dv) return;
    cuda::buffer<T> acc_buf = be.allocate<T>(Tk * HS);
    T* acc = acc_buf.data();
    for (index_t b = 0; b < d.B; b++)
        for (index_t g = 0; g < d.NKV; g++) {
            if (dv) {
                for (index_t h = g * G; h < (g + 1) * G; h++)
                    gemm(be, Tk, HS, Tq, att_at(b, h), index_t(1), Tk, dout_at(b, h), C, index_t(1), acc, HS,
                         h == g * G ? ops::gemm_init::zero : ops::gemm_init::accumulate);
                T* dst = dv + kv_at(b, g);
                for_each_item(be, "attention_dv", Tk * HS,
                              [=] __device__(index_t e) { exact::add_rows(e, dst, Ck, acc, HS, scale, false); });
            }
            if (dk) {
                for (index_t h = g * G; h < (g + 1) * G; h++)
                    gemm(be, Tk, HS, Tq, dS + (b * NH + h) * Tq * Tk, index_t(1), Tk, q_at(b, h), C, index_t(1), acc, HS,
                         h == g * G ? ops::gemm_init::zero : ops::gemm_init::accumulate);
                T* dst = dk + kv_at(b, g);
                for_each_item(be, "attention_dk", Tk * HS,
                              [=] __device__(index_t e) { exact::add_rows(e, dst, Ck, acc, HS, scale, true); });
            }
        }
}

// --- rope --------------------------------------------------------------------------------------

namespace cuda_detail {
/// Each row's cos and sin, computed on the host as the CPU kernel does, then uploaded.
template <class T>
struct rope_tables {
    cuda::buffer<T> c, s;
    rope_tables(const cuda& be, const std::int64_t* pos, index_t N, const ops::rope_table& tab) {
        const index_t h = tab.head_size / 2;
        std::vector<T> hc(static_cast<std::size_t>(N * h)), hs(hc.size());
        for (index_t n = 0; n < N; n++) ops::rope_cos_sin(tab, pos[n], hc.data() + n * h, hs.data() + n * h);
        c = be.upload(hc.data(), N * h);
        s = be.upload(hs.data(), N * h);
    }
};
}  // namespace cuda_detail

template <class T>
void rope_forward(const cuda& be, T* y, const T* x, const std::int64_t* pos, index_t N, int NH, const ops::rope_table& tab) {
    const cuda_detail::rope_tables<T> t(be, pos, N, tab);
    const T *c = t.c.data(), *s = t.s.data();
    const index_t HS = tab.head_size, nh = NH;
    for_each_item(be, "rope_forward", N * nh * (HS / 2),
                  [=] __device__(index_t e) { exact::rope_forward(e, y, x, c, s, nh, HS); });
}
template <class T>
void rope_backward(const cuda& be, T* dx, const T* dy, const std::int64_t* pos, index_t N, int NH, const ops::rope_table& tab) {
    const cuda_detail::rope_tables<T> t(be, pos, N, tab);
    const T *c = t.c.data(), *s = t.s.data();
    const index_t HS = tab.head_size, nh = NH;
    for_each_item(be, "rope_backward", N * nh * (HS / 2),
                  [=] __device__(index_t e) { exact::rope_backward(e, dx, dy, c, s, nh, HS); });
}

// --- cross-entropy -----------------------------------------------------------------------------

template <class T>
void cross_entropy_forward(const cuda& be, T* loss, T* lse, const T* z, const std::int64_t* targets, index_t N, index_t V,
                           std::int64_t ignore_index) {
    const index_t count = ops::cross_entropy_count(targets, N, V, ignore_index);
    const auto d_targets = be.upload(targets, N);
    const std::int64_t* t = d_targets.data();
    for_each_item(be, "cross_entropy_forward", N,
                  [=] __device__(index_t n) { exact::cross_entropy_row(n, lse, z, t, V, ignore_index); });
    for_each_item(be, "cross_entropy_loss", 1,
                  [=] __device__(index_t) { exact::cross_entropy_loss(loss, lse, z, t, N, V, ignore_index, count); });
}
template <class T>
void cross_entropy_backward(const cuda& be, T* dz, const T* dloss, const T* z, const T* lse, const std::int64_t* targets,
                            index_t N, index_t V, std::int64_t ignore_index) {
    const index_t count = ops::cross_entropy_count(targets, N, V, ignore_index);
    if (count == 0) return;
    const auto d_targets = be.upload(targets, N);
    const std::int64_t* t = d_targets.data();
    for_each_item(be, "cross_entropy_backward", N * V, [=] __device__(index_t e) {
        exact::cross_entropy_grad(e / V, e % V, dz, *dloss / T(count), z, lse, t, V, ignore_index);
    });
}

// --- patch embedding ---------------------------------------------------------------------------

template <class T>
void patch_embed_forward(const cuda& be, T* out, const T* pixels, const T* w, const ops::patch_dims& d) {
    const index_t M = d.B * d.patches(), K = d.K(), C = d.C, H = d.H, W = d.W, P = d.P;
    cuda::buffer<T> cols_buf = be.allocate<T>(M * K);
    T* cols = cols_buf.data();
    for_each_item(be, "patch_gather", M * K, [=] __device__(index_t e) { exact::patch_gather(e, cols, pixels, C, H, W, P); });
    gemm(be, M, d.D, K, cols, K, index_t(1), w, index_t(1), K, out, d.D, ops::gemm_init::zero);
}
template <class T>
void patch_embed_backward(const cuda& be, T* dpixels, T* dw, const T* dout, const T* pixels, const T* w,
                          const ops::patch_dims& d) {
    const index_t M = d.B * d.patches(), K = d.K(), C = d.C, H = d.H, W = d.W, P = d.P;
    cuda::buffer<T> cols_buf = be.allocate<T>(M * K);
    T* cols = cols_buf.data();
    if (dw) {
        for_each_item(be, "patch_gather", M * K, [=] __device__(index_t e) { exact::patch_gather(e, cols, pixels, C, H, W, P); });
        gemm(be, d.D, K, M, dout, index_t(1), d.D, cols, K, index_t(1), dw, K, ops::gemm_init::accumulate);
    }
    if (dpixels) {
        gemm(be, M, K, d.D, dout, d.D, index_t(1), w, K, index_t(1), cols, K, ops::gemm_init::zero);
        for_each_item(be, "patch_scatter_add", M * K,
                      [=] __device__(index_t e) { exact::patch_scatter_add(e, dpixels, cols, C, H, W, P); });
    }
}

// --- 16-bit packed weights: the panels' bits, uploaded once per device context ---------------------

namespace cuda_detail {
/// The device copy of W's panels (raw 16-bit bits, the host layout), made on first use.
template <class S>
const std::uint16_t* device_panels(const cuda& be, const ops::packed_weight<S>& W) {
    static_assert(sizeof(S) == sizeof(std::uint16_t), "16-bit storage");
    const std::shared_ptr<const void> copy = W.mirror(be.context_key(), [&] {
        const index_t n = W.panels() * W.K() * ops::packed_weight<S>::panel_width;
        auto buf = std::make_shared<cuda::buffer<std::uint16_t>>(be.allocate<std::uint16_t>(n));
        if (n > 0) be.from_host(buf->data(), reinterpret_cast<const std::uint16_t*>(W.panel(0)), n);
        return std::shared_ptr<const void>(buf, buf->data());  // owns the buffer, points at its memory
    });
    return static_cast<const std::uint16_t*>(copy.get());
}
}  // namespace cuda_detail

template <class S>
void linear_packed(const cuda& be, float* Y, const float* X, const ops::packed_weight<S>& W, const float* bias, index_t M) {
    ALIGNGPT_CHECK(M >= 0, "linear_packed: negative M=", M);
    const index_t N = W.N(), K = W.K();
    if (M == 0 || N == 0) return;
    const std::uint16_t* P = cuda_detail::device_panels(be, W);
    for_each_item(be, "linear_packed", M * N,
                  [=] __device__(index_t e) { exact::linear_packed_element<S>(e, Y, X, P, bias, N, K); });
}
template <class S>
void packed_unpack(const cuda& be, float* W, const ops::packed_weight<S>& pw) {
    const index_t K = pw.K();
    if (pw.N() == 0 || K == 0) return;
    const std::uint16_t* P = cuda_detail::device_panels(be, pw);
    for_each_item(be, "packed_unpack", pw.N() * K, [=] __device__(index_t e) { exact::packed_unpack_element<S>(e, W, P, K); });
}
template void linear_packed<bf16>(const cuda&, float*, const float*, const ops::packed_weight<bf16>&, const float*, index_t);
template void linear_packed<f16>(const cuda&, float*, const float*, const ops::packed_weight<f16>&, const float*, index_t);
template void packed_unpack<bf16>(const cuda&, float*, const ops::packed_weight<bf16>&);
template void packed_unpack<f16>(const cuda&, float*, const ops::packed_weight<f16>&);

// --- explicit instantiations: float and double -------------------------------------------------

#define ALIGNGPT_CUDA_KERNELS(T)                                                                                                 \
    template void gemm<T>(const cuda&, index_t, index_t, index_t, const T*, index_t, index_t, const T*, index_t, index_t, T*,    \
                          index_t, ops::gemm_init, const T*);                                                                    \
    template void linear_forward<T>(const cuda&, T*, const T*, const T*, const T*, index_t, index_t, index_t);                   \
    template void linear_backward<T>(const cuda&, T*, T*, T*, const T*, const T*, const T*, index_t, index_t, index_t);          \
    template void add_forward<T>(const cuda&, T*, const T*, const T*, index_t);                                                  \
    template void add_backward<T>(const cuda&, T*, T*, const T*, index_t);                                                       \
    template void mul_forward<T>(const cuda&, T*, const T*, const T*, index_t);                                                  \
    template void mul_backward<T>(const cuda&, T*, T*, const T*, const T*, const T*, index_t);                                   \
    template void scale_forward<T>(const cuda&, T*, const T*, T, index_t);                                                       \
    template void scale_backward<T>(const cuda&, T*, const T*, T, index_t);                                                      \
    template void add_row_forward<T>(const cuda&, T*, const T*, const T*, index_t, index_t);                                     \
    template void add_row_backward<T>(const cuda&, T*, T*, const T*, index_t, index_t);                                          \
    template void gelu_forward<T>(const cuda&, T*, const T*, index_t);                                                           \
    template void gelu_backward<T>(const cuda&, T*, const T*, const T*, index_t);                                                \
    template void quick_gelu_forward<T>(const cuda&, T*, const T*, index_t);                                                     \
    template void quick_gelu_backward<T>(const cuda&, T*, const T*, const T*, index_t);                                          \
    template void silu_forward<T>(const cuda&, T*, const T*, index_t);                                                           \
    template void silu_backward<T>(const cuda&, T*, const T*, const T*, index_t);                                                \
    template void swiglu_forward<T>(const cuda&, T*, const T*, const T*, index_t);                                               \
    template void swiglu_backward<T>(const cuda&, T*, T*, const T*, const T*, const T*, index_t);                                \
    template void rms_norm_forward<T>(const cuda&, T*, T*, const T*, const T*, index_t, index_t, T);                             \
    template void rms_norm_backward<T>(const cuda&, T*, T*, const T*, const T*, const T*, const T*, index_t, index_t);           \
    template void layer_norm_forward<T>(const cuda&, T*, T*, T*, const T*, const T*, const T*, index_t, index_t, T);             \
    template void layer_norm_backward<T>(const cuda&, T*, T*, T*, const T*, const T*, const T*, const T*, const T*, index_t,     \
                                         index_t);                                                                               \
    template void softmax_forward<T>(const cuda&, T*, const T*, index_t, index_t);                                               \
    template void softmax_backward<T>(const cuda&, T*, const T*, const T*, index_t, index_t);                                    \
    template void l2_normalize_forward<T>(const cuda&, T*, T*, const T*, index_t, index_t);                                      \
    template void l2_normalize_backward<T>(const cuda&, T*, const T*, const T*, const T*, index_t, index_t);                     \
    template void sum_forward<T>(const cuda&, T*, const T*, index_t, index_t, index_t, bool);                                    \
    template void sum_backward<T>(const cuda&, T*, const T*, index_t, index_t, index_t, bool);                                   \
    template void embedding_forward<T>(const cuda&, T*, const T*, const std::int64_t*, index_t, index_t, index_t);               \
    template void embedding_backward<T>(const cuda&, T*, const T*, const std::int64_t*, index_t, index_t, index_t,               \
                                        std::int64_t);                                                                           \
    template void copy_block<T>(const cuda&, T*, index_t, index_t, const T*, index_t, index_t, index_t, index_t, index_t, bool); \
    template void transpose_copy<T>(const cuda&, T*, const T*, index_t, index_t, index_t, index_t, index_t, bool);               \
    template void masked_mean_forward<T>(const cuda&, T*, const T*, const std::uint8_t*, const T*, index_t, index_t, index_t);   \
    template void masked_mean_backward<T>(const cuda&, T*, const T*, const std::uint8_t*, const T*, index_t, index_t, index_t);  \
    template void batched_matvec_forward<T>(const cuda&, T*, const T*, const T*, index_t, index_t, index_t);                     \
    template void batched_matvec_backward<T>(const cuda&, T*, T*, const T*, const T*, const T*, index_t, index_t, index_t);      \
    template void attention_forward<T>(const cuda&, T*, T*, const T*, const T*, const T*, const ops::attention_dims&,            \
                                       const ops::attention_options&);                                                           \
    template void attention_backward<T>(const cuda&, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,               \
                                        const ops::attention_dims&, const ops::attention_options&);                              \
    template void rope_forward<T>(const cuda&, T*, const T*, const std::int64_t*, index_t, int, const ops::rope_table&);         \
    template void rope_backward<T>(const cuda&, T*, const T*, const std::int64_t*, index_t, int, const ops::rope_table&);        \
    template void cross_entropy_forward<T>(const cuda&, T*, T*, const T*, const std::int64_t*, index_t, index_t, std::int64_t);  \
    template void cross_entropy_backward<T>(const cuda&, T*, const T*, const T*, const T*, const std::int64_t*, index_t,         \
                                            index_t, std::int64_t);                                                              \
    template void patch_embed_forward<T>(const cuda&, T*, const T*, const T*, const ops::patch_dims&);                           \
    template void patch_embed_backward<T>(const cuda&, T*, T*, const T*, const T*, const T*, const ops::patch_dims&);
ALIGNGPT_CUDA_KERNELS(float)
ALIGNGPT_CUDA_KERNELS(double)
#undef ALIGNGPT_CUDA_KERNELS

}  // namespace aligngpt::backend
