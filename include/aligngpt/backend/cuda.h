#pragma once
// backend::cuda: the backend policy (backend/cpu.h) on an NVIDIA GPU (issue #13; docs/design.md
// "Backend policy" and "The CUDA backend").
//
//   backend::cuda gpu;                                      // device 0, the default stream
//   models::llama_model<float, backend::cuda> m(cfg, gpu);  // weights live on the GPU
//   auto h = y.to_vector();                                 // the one way back: an explicit copy
//
// Exact mode (the default): every kernel is backend/cuda/exact.h's work item, one thread per item,
// so every output has the bits backend::cpu gives it (tests/test_cuda_exact.cpp checks the work
// items on the host; tests/cuda/ checks the device). Fast mode: the GEMMs on cuBLAS (see mode).
//
// This header is plain C++: the kernels are compiled once by nvcc into the aligngpt::cuda library
// (backend/cuda/*.cu), so a program that uses the backend is compiled by its usual compiler and
// links aligngpt::cuda (CMake option ALIGNGPT_WITH_CUDA=ON). Element types: float and double
// (double for gradient checks), plus std::int64_t for the memory primitives.
//
// Memory: allocate() takes blocks from a caching allocator (freed blocks are kept per size and
// reused in stream order; empty_cache() returns them to the driver). All work is queued on one
// stream that the caller owns (nullptr: the legacy default stream); to_host waits for it.
// Host transfers and kernel launches are counted (counts()), so tests can prove a forward pass
// makes no hidden copies.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/half.h"
#include "aligngpt/ops/attention.h"
#include "aligngpt/ops/gemm.h"
#include "aligngpt/ops/packed.h"
#include "aligngpt/ops/patch_embed.h"
#include "aligngpt/ops/rope.h"

namespace aligngpt::backend {

namespace cuda_detail {
struct context;
/// Gives a block back to its context's cache (backend/cuda/memory.cu).
void release(context& ctx, void* p, std::size_t bytes) noexcept;
}  // namespace cuda_detail

class cuda {
public:
    static constexpr const char* name = "cuda";
    static constexpr bool host_accessible = false;

    /// CUDA devices visible to this process; 0 when there is no driver or no GPU (never throws).
    static int device_count() noexcept;

    /// Device memory for n elements: a block of the context's cache, given back when destroyed.
    template <class T>
    class buffer {
    public:
        buffer() = default;
        buffer(std::shared_ptr<cuda_detail::context> ctx, T* p, index_t n, std::size_t bytes)
            : ctx_(std::move(ctx)), p_(p), n_(n), bytes_(bytes) {}
        buffer(const buffer&) = delete;
        buffer& operator=(const buffer&) = delete;
        buffer(buffer&& o) noexcept : ctx_(std::move(o.ctx_)), p_(o.p_), n_(o.n_), bytes_(o.bytes_) {
            o.p_ = nullptr, o.n_ = 0, o.bytes_ = 0;
        }
        buffer& operator=(buffer&& o) noexcept {
            if (this != &o) {
                reset();
                ctx_ = std::move(o.ctx_), p_ = o.p_, n_ = o.n_, bytes_ = o.bytes_;
                o.p_ = nullptr, o.n_ = 0, o.bytes_ = 0;
            }
            return *this;
        }
        ~buffer() { reset(); }
        T* data() { return p_; }
        const T* data() const { return p_; }
        index_t size() const { return n_; }

    private:
        void reset() noexcept {
            if (p_) cuda_detail::release(*ctx_, p_, bytes_);
            p_ = nullptr;
        }
        std::shared_ptr<cuda_detail::context> ctx_;
        T* p_ = nullptr;
        index_t n_ = 0;
        std::size_t bytes_ = 0;
    };

    /// exact: every output has backend::cpu's bits (the default). fast: the GEMMs (linear layers,
    /// attention's products, the patch embedding) run on cuBLAS in FP32, TF32 off unless
    /// `allow_tf32`; their results then match the CPU within rounding (tests/cuda/), not bit for bit.
    /// Everything else runs the exact kernels in both modes.
    enum class mode { exact, fast };

    /// Work runs on `device` and is queued on `stream` (a cudaStream_t that the caller keeps alive
    /// while this backend and its tensors live; nullptr: the legacy default stream). Throws
    /// aligngpt::error when the device does not exist.
    explicit cuda(int device = 0, void* stream = nullptr, mode m = mode::exact, bool allow_tf32 = false);

    int device() const;
    void* stream() const;
    mode gemm_mode() const;
    bool tf32() const;
    /// The cuBLAS handle of this backend (cublasHandle_t), created on first use, on stream().
    void* blas_handle() const;

    /// A zero-filled buffer of n elements.
    template <class T>
    buffer<T> allocate(index_t n) const {
        ALIGNGPT_CHECK(n >= 0, "cuda backend: negative size ", n);
        ALIGNGPT_CHECK(std::size_t(n) <= (std::size_t(-1) >> 1) / sizeof(T), "cuda backend: ", n, " elements overflow");
        std::size_t bytes = 0;
        void* p = allocate_bytes(std::size_t(n) * sizeof(T), bytes);
        return buffer<T>(ctx_, static_cast<T*>(p), n, bytes);
    }

    // The memory primitives of the policy, on the device (backend/cuda/memory.cu).
    template <class T>
    void fill(T* p, index_t n, T v) const;
    template <class T>
    void copy(T* dst, const T* src, index_t n) const;
    template <class T>
    void copy_strided(T* dst, const T* src, const std::vector<index_t>& shape, const std::vector<index_t>& strides) const;
    template <class T>
    void accumulate(T* dst, const T* src, index_t n) const;
    /// Device to host; returns when the host copy is complete (waits for the stream).
    template <class T>
    void to_host(T* host, const T* src, index_t n) const {
        copy_to_host(host, src, std::size_t(n) * sizeof(T));
    }
    /// Host to device; the host memory may be reused as soon as this returns.
    template <class T>
    void from_host(T* dst, const T* host, index_t n) const {
        copy_from_host(dst, host, std::size_t(n) * sizeof(T));
    }
    void synchronize() const;

    /// Host data that a kernel reads (token ids, masks, denominators) copied to device scratch
    /// that lives as long as the returned buffer; counted as a from_host transfer.
    template <class T>
    buffer<T> upload(const T* host, index_t n) const {
        buffer<T> b = allocate<T>(n);
        if (n > 0) from_host(b.data(), host, n);
        return b;
    }

    struct counters {
        index_t launches = 0, to_host_calls = 0, from_host_calls = 0;
        std::size_t to_host_bytes = 0, from_host_bytes = 0;
        std::size_t device_bytes = 0;  ///< held from the driver: in use plus cached
        std::size_t cached_bytes = 0;  ///< of which free for reuse
    };
    counters counts() const;
    void reset_counts() const;
    /// Returns the cached free blocks to the driver.
    void empty_cache() const;

    /// For the kernels (backend/cuda/kernels.cu): counts a launch and reports a failed one.
    void launched(const char* kernel) const;
    /// Identifies this backend's device context (shared by its copies): the owner of the device
    /// copies it keeps of 16-bit packed weights (ops::packed_weight::mirror).
    const void* context_key() const { return ctx_.get(); }

private:
    void* allocate_bytes(std::size_t want, std::size_t& got) const;
    void copy_to_host(void* host, const void* src, std::size_t bytes) const;
    void copy_from_host(void* dst, const void* host, std::size_t bytes) const;

    std::shared_ptr<cuda_detail::context> ctx_;
};

// The kernels of ops/ for this backend (backend/cuda/kernels.cu), found by argument-dependent
// lookup on `cuda`, with the signatures of the CPU kernels. T is float or double.
template <class T>
void gemm(const cuda&, index_t M, index_t N, index_t K, const T* A, index_t rs_a, index_t cs_a, const T* B, index_t rs_b,
          index_t cs_b, T* C, index_t ldc, ops::gemm_init init = ops::gemm_init::zero, const T* bias = nullptr);
template <class T>
void linear_forward(const cuda&, T* Y, const T* X, const T* W, const T* b, index_t M, index_t N, index_t K);
template <class T>
void linear_backward(const cuda&, T* dX, T* dW, T* db, const T* dY, const T* X, const T* W, index_t M, index_t N, index_t K);

template <class T>
void add_forward(const cuda&, T* y, const T* a, const T* b, index_t n);
template <class T>
void add_backward(const cuda&, T* da, T* db, const T* dy, index_t n);
template <class T>
void mul_forward(const cuda&, T* y, const T* a, const T* b, index_t n);
template <class T>
void mul_backward(const cuda&, T* da, T* db, const T* dy, const T* a, const T* b, index_t n);
template <class T>
void scale_forward(const cuda&, T* y, const T* x, T s, index_t n);
template <class T>
void scale_backward(const cuda&, T* dx, const T* dy, T s, index_t n);
template <class T>
void add_row_forward(const cuda&, T* y, const T* x, const T* r, index_t N, index_t C);
template <class T>
void add_row_backward(const cuda&, T* dx, T* dr, const T* dy, index_t N, index_t C);

template <class T>
void gelu_forward(const cuda&, T* y, const T* x, index_t n);
template <class T>
void gelu_backward(const cuda&, T* dx, const T* dy, const T* x, index_t n);
template <class T>
void quick_gelu_forward(const cuda&, T* y, const T* x, index_t n);
template <class T>
void quick_gelu_backward(const cuda&, T* dx, const T* dy, const T* x, index_t n);
template <class T>
void silu_forward(const cuda&, T* y, const T* x, index_t n);
template <class T>
void silu_backward(const cuda&, T* dx, const T* dy, const T* x, index_t n);
template <class T>
void swiglu_forward(const cuda&, T* y, const T* g, const T* u, index_t n);
template <class T>
void swiglu_backward(const cuda&, T* dg, T* du, const T* dy, const T* g, const T* u, index_t n);

template <class T>
void rms_norm_forward(const cuda&, T* y, T* rstd, const T* x, const T* g, index_t N, index_t C, T eps);
template <class T>
void rms_norm_backward(const cuda&, T* dx, T* dg, const T* dy, const T* x, const T* g, const T* rstd, index_t N, index_t C);
template <class T>
void layer_norm_forward(const cuda&, T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t N, index_t C, T eps);
template <class T>
void layer_norm_backward(const cuda&, T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* mean, const T* rstd,
                         index_t N, index_t C);
template <class T>
void softmax_forward(const cuda&, T* p, const T* x, index_t N, index_t C);
template <class T>
void softmax_backward(const cuda&, T* dx, const T* dy, const T* p, index_t N, index_t C);
template <class T>
void l2_normalize_forward(const cuda&, T* y, T* norm, const T* x, index_t N, index_t C);
template <class T>
void l2_normalize_backward(const cuda&, T* dx, const T* dy, const T* y, const T* norm, index_t N, index_t C);

template <class T>
void sum_forward(const cuda&, T* y, const T* x, index_t outer, index_t D, index_t inner, bool mean);
template <class T>
void sum_backward(const cuda&, T* dx, const T* dy, index_t outer, index_t D, index_t inner, bool mean);
/// ids are host memory, as for the CPU kernel (checked against V on the host, then uploaded).
template <class T>
void embedding_forward(const cuda&, T* y, const T* W, const std::int64_t* ids, index_t Tn, index_t V, index_t C);
template <class T>
void embedding_backward(const cuda&, T* dW, const T* dy, const std::int64_t* ids, index_t Tn, index_t V, index_t C,
                        std::int64_t padding_idx = -1);
template <class T>
void copy_block(const cuda&, T* y, index_t Dy, index_t y_off, const T* x, index_t Dx, index_t x_off, index_t Dn, index_t outer,
                index_t inner, bool accumulate);
template <class T>
void transpose_copy(const cuda&, T* y, const T* x, index_t P, index_t A, index_t M, index_t Bn, index_t Q, bool accumulate);
/// mask and denom are host memory (ops/masked_mean.h computes denom on the host).
template <class T>
void masked_mean_forward(const cuda&, T* y, const T* x, const std::uint8_t* mask, const T* denom, index_t Bn, index_t Tn,
                         index_t H);
template <class T>
void masked_mean_backward(const cuda&, T* dx, const T* dy, const std::uint8_t* mask, const T* denom, index_t Bn, index_t Tn,
                          index_t H);
template <class T>
void batched_matvec_forward(const cuda&, T* y, const T* M, const T* v, index_t Bn, index_t J, index_t H);
template <class T>
void batched_matvec_backward(const cuda&, T* dM, T* dv, const T* dy, const T* M, const T* v, index_t Bn, index_t J, index_t H);

/// Attention as ops/attention.h defines it; key_lengths and key_mask of the options are uploaded.
template <class T>
void attention_forward(const cuda&, T* out, T* att, const T* q, const T* k, const T* v, const ops::attention_dims& d,
                       const ops::attention_options& o);
template <class T>
void attention_backward(const cuda&, T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* att,
                        const ops::attention_dims& d, const ops::attention_options& o);
/// Positions are host memory; each row's cos and sin are computed on the host (ops::rope_cos_sin,
/// the CPU's values) and uploaded.
template <class T>
void rope_forward(const cuda&, T* y, const T* x, const std::int64_t* pos, index_t N, int NH, const ops::rope_table& tab);
template <class T>
void rope_backward(const cuda&, T* dx, const T* dy, const std::int64_t* pos, index_t N, int NH, const ops::rope_table& tab);
/// targets are host memory (checked on the host); loss and dloss are device memory.
template <class T>
void cross_entropy_forward(const cuda&, T* loss, T* lse, const T* z, const std::int64_t* targets, index_t N, index_t V,
                           std::int64_t ignore_index = -100);
template <class T>
void cross_entropy_backward(const cuda&, T* dz, const T* dloss, const T* z, const T* lse, const std::int64_t* targets, index_t N,
                            index_t V, std::int64_t ignore_index = -100);
template <class T>
void patch_embed_forward(const cuda&, T* out, const T* pixels, const T* w, const ops::patch_dims& d);
template <class T>
void patch_embed_backward(const cuda&, T* dpixels, T* dw, const T* dout, const T* pixels, const T* w, const ops::patch_dims& d);
/// 16-bit packed weights (ops/packed.h; S = bf16 or f16): the panels are copied to the device once,
/// on first use, and kept with the host weights (ops::packed_weight::mirror); each output is the
/// CPU's chain (exact::linear_packed_element) in both modes.
template <class S>
void linear_packed(const cuda&, float* Y, const float* X, const ops::packed_weight<S>& W, const float* bias, index_t M);
template <class S>
void packed_unpack(const cuda&, float* W, const ops::packed_weight<S>& pw);

}  // namespace aligngpt::backend
