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
#include <cmath>

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

/// C = c0 + A B as defined above. Threads split rows of C; each element is one fma chain.
template <class T>
void gemm(const backend::cpu&, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a,
          const T* B, index_t rs_b, index_t cs_b, T* C, index_t ldc, gemm_init init = gemm_init::zero,
          const T* bias = nullptr) {
    gemm_check("gemm", M, N, K, init, bias);
    ALIGNGPT_OMP_FOR
    for (index_t i = 0; i < M; i++)
        gemm_reference(1, N, K, A + i * rs_a, rs_a, cs_a, B, rs_b, cs_b, C + i * ldc, ldc, init, bias);
}

}  // namespace aligngpt::ops
