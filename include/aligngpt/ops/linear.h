#pragma once
// Linear layer (torch.nn.Linear): y = x W^T + b, with W stored [out, in] as in the checkpoints.
//
//   Y[m,n]  = b[n] + sum_k X[m,k] W[n,k]                      (one fma chain per output, gemm.h)
// Backward (accumulating into the gradient buffers):
//   dX[m,k] += sum_n dY[m,n] W[n,k]                           dX = dY W
//   dW[n,k] += sum_m dY[m,n] X[m,k]                           dW = dY^T X, m in order
//   db[n]   += sum_m dY[m,n]                                  m in order
//
// Shapes: X, dX (M, K)   W, dW (N, K)   b, db (N)   Y, dY (M, N)
#include "aligngpt/autograd/tape.h"
#include "aligngpt/ops/gemm.h"

namespace aligngpt::ops {

template <class T>
void linear_forward(const backend::cpu& be, T* Y, const T* X, const T* W, const T* b, index_t M, index_t N, index_t K) {
    gemm(be, M, N, K, X, K, 1, W, 1, K, Y, N, b ? gemm_init::bias : gemm_init::zero, b);
}

template <class T>
void linear_backward(const backend::cpu& be, T* dX, T* dW, T* db, const T* dY, const T* X, const T* W, index_t M, index_t N,
                     index_t K) {
    if (dX) gemm(be, M, K, N, dY, N, 1, W, K, 1, dX, K, gemm_init::accumulate);
    if (dW) gemm(be, N, K, M, dY, 1, N, X, K, 1, dW, K, gemm_init::accumulate);
    if (db) {
        ALIGNGPT_OMP_FOR
        for (index_t n = 0; n < N; n++) {
            T acc = db[n];
            for (index_t m = 0; m < M; m++) acc += dY[m * N + n];
            db[n] = acc;
        }
    }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

using autograd::tape;
using autograd::variable;

/// y = x W^T + b over the last dimension of x (any leading dimensions). b may be undefined.
template <class T, class Backend>
variable<T, Backend> linear(tape<T, Backend>* tp, const variable<T, Backend>& x, const variable<T, Backend>& w,
                            const variable<T, Backend>& b = {}) {
    const Backend& be = x.backend();
    const index_t K = x.shape().back(), N = w.size(0);
    ALIGNGPT_CHECK(w.value().dim() == 2 && w.size(1) == K, "linear: input ", detail::shape_str(x.shape()),
                   " does not match weight ", detail::shape_str(w.shape()));
    ALIGNGPT_CHECK(!b.defined() || (b.value().dim() == 1 && b.size(0) == N), "linear: bias ",
                   detail::shape_str(b.defined() ? b.shape() : shape_t{}), " does not match weight ",
                   detail::shape_str(w.shape()));
    const index_t M = K ? x.value().numel() / K : 0;
    shape_t ys = x.shape();
    ys.back() = N;
    tensor<T, Backend> y(ys, be);
    linear_forward(be, y.data(), x.value().data(), w.value().data(), b.defined() ? b.value().data() : nullptr, M, N, K);
    std::vector<variable<T, Backend>> in{x, w};
    if (b.defined()) in.push_back(b);
    return tape<T, Backend>::record(tp, "linear", y, in, [x, w, b, M, N, K](autograd::node<T, Backend>& out) {
        const Backend& bk = out.value.backend();
        T* dx = x.requires_grad() ? x.get()->grad_buffer().data() : nullptr;
        T* dw = w.requires_grad() ? w.get()->grad_buffer().data() : nullptr;
        T* db = b.defined() && b.requires_grad() ? b.get()->grad_buffer().data() : nullptr;
        linear_backward(bk, dx, dw, db, out.grad.data(), x.value().data(), w.value().data(), M, N, K);
    });
}

}  // namespace aligngpt::ag
