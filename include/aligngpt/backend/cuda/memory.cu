// backend::cuda's memory: the device context, the caching allocator, the memory primitives and
// the counted host transfers (backend/cuda.h). Compiled by nvcc into aligngpt::cuda.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>
#include <vector>

#include "aligngpt/backend/cuda.h"
#include "aligngpt/backend/cuda/launch.cuh"

namespace aligngpt::backend {

namespace cuda_detail {

void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) fail("cuda backend: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

/// Blocks are rounded up (512 B below 1 MiB, else 2 MiB) so that a freed block serves the next
/// request of about the same size; a training step asks for the same sizes every step.
std::size_t rounded(std::size_t bytes) {
    const std::size_t unit = bytes < (std::size_t(1) << 20) ? 512 : std::size_t(2) << 20;
    return (std::max<std::size_t>(bytes, 1) + unit - 1) / unit * unit;
}

struct context {
    int device = 0;
    cudaStream_t stream = nullptr;
    cuda::mode mode = cuda::mode::exact;
    bool tf32 = false;
    cublasHandle_t blas = nullptr;
    std::mutex mu;
    std::unordered_map<std::size_t, std::vector<void*>> free_blocks;  // by rounded size
    cuda::counters counts;

    ~context() {
        if (blas) cublasDestroy(blas);
        for (auto& [bytes, blocks] : free_blocks)
            for (void* p : blocks) cudaFree(p);  // errors at teardown have nowhere to go
    }
    void* take(std::size_t bytes) {
        std::lock_guard<std::mutex> g(mu);
        auto it = free_blocks.find(bytes);
        if (it == free_blocks.end() || it->second.empty()) return nullptr;
        void* p = it->second.back();
        it->second.pop_back();
        counts.cached_bytes -= bytes;
        return p;
    }
    void empty() {
        std::lock_guard<std::mutex> g(mu);
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize before freeing the cache");
        for (auto& [bytes, blocks] : free_blocks)
            for (void* p : blocks) {
                check(cudaFree(p), "cudaFree");
                counts.device_bytes -= bytes;
                counts.cached_bytes -= bytes;
            }
        free_blocks.clear();
    }
};

void release(context& ctx, void* p, std::size_t bytes) noexcept {
    // Kept, not freed: work queued on the stream may still use the block, and the next user of
    // it is queued on the same stream, so it runs after that work (stream order).
    std::lock_guard<std::mutex> g(ctx.mu);
    ctx.free_blocks[bytes].push_back(p);
    ctx.counts.cached_bytes += bytes;
}

}  // namespace cuda_detail

using cuda_detail::check;

int cuda::device_count() noexcept {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error for later calls
        return 0;
    }
    return n;
}

cuda::cuda(int device, void* stream, mode m, bool allow_tf32) : ctx_(std::make_shared<cuda_detail::context>()) {
    const int n = device_count();
    ALIGNGPT_CHECK(device >= 0 && device < n, "cuda backend: device ", device, " does not exist (", n, " CUDA device",
                   n == 1 ? "" : "s", " visible)");
    check(cudaSetDevice(device), "cudaSetDevice");
    ctx_->device = device;
    ctx_->stream = static_cast<cudaStream_t>(stream);
    ctx_->mode = m;
    ctx_->tf32 = allow_tf32;
}

int cuda::device() const { return ctx_->device; }
void* cuda::stream() const { return ctx_->stream; }
cuda::mode cuda::gemm_mode() const { return ctx_->mode; }
bool cuda::tf32() const { return ctx_->tf32; }

void* cuda::blas_handle() const {
    std::lock_guard<std::mutex> g(ctx_->mu);
    if (!ctx_->blas) {
        cublasHandle_t h = nullptr;
        ALIGNGPT_CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cuda backend: cublasCreate failed on device ", ctx_->device);
        cublasSetStream(h, ctx_->stream);
        // FP32 on CUDA cores unless TF32 was asked for; never the reduced-precision reductions.
        cublasSetMathMode(h, ctx_->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH);
        ctx_->blas = h;
    }
    return ctx_->blas;
}

void* cuda::allocate_bytes(std::size_t want, std::size_t& got) const {
    got = cuda_detail::rounded(want);
    void* p = ctx_->take(got);
    if (!p) {
        cudaError_t e = cudaMalloc(&p, got);
        if (e == cudaErrorMemoryAllocation) {  // the cache may hold enough: give it back and retry
            cudaGetLastError();
            ctx_->empty();
            e = cudaMalloc(&p, got);
        }
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail("cuda backend: cannot allocate ", got, " bytes on device ", ctx_->device, " (", ctx_->counts.device_bytes,
                 " bytes held): ", cudaGetErrorString(e));
        }
        std::lock_guard<std::mutex> g(ctx_->mu);
        ctx_->counts.device_bytes += got;
    }
    check(cudaMemsetAsync(p, 0, got, ctx_->stream), "cudaMemsetAsync (zero-fill)");
    return p;
}

void cuda::copy_to_host(void* host, const void* src, std::size_t bytes) const {
    if (bytes == 0) return;
    check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, ctx_->stream), "cudaMemcpyAsync to host");
    check(cudaStreamSynchronize(ctx_->stream), "cudaStreamSynchronize after a copy to host");
    std::lock_guard<std::mutex> g(ctx_->mu);
    ctx_->counts.to_host_calls++, ctx_->counts.to_host_bytes += bytes;
}

void cuda::copy_from_host(void* dst, const void* host, std::size_t bytes) const {
    if (bytes == 0) return;
    // From pageable memory this returns once the data is staged: the caller may reuse `host`.
    check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, ctx_->stream), "cudaMemcpyAsync from host");
    std::lock_guard<std::mutex> g(ctx_->mu);
    ctx_->counts.from_host_calls++, ctx_->counts.from_host_bytes += bytes;
}

void cuda::synchronize() const { check(cudaStreamSynchronize(ctx_->stream), "cudaStreamSynchronize"); }

cuda::counters cuda::counts() const {
    std::lock_guard<std::mutex> g(ctx_->mu);
    return ctx_->counts;
}
void cuda::reset_counts() const {
    std::lock_guard<std::mutex> g(ctx_->mu);
    ctx_->counts.launches = ctx_->counts.to_host_calls = ctx_->counts.from_host_calls = 0;
    ctx_->counts.to_host_bytes = ctx_->counts.from_host_bytes = 0;
}
void cuda::empty_cache() const { ctx_->empty(); }

void cuda::launched(const char* kernel) const {
    check(cudaGetLastError(), kernel);
    std::lock_guard<std::mutex> g(ctx_->mu);
    ctx_->counts.launches++;
}

// --- the memory primitives ---------------------------------------------------------------------

template <class T>
void cuda::fill(T* p, index_t n, T v) const {
    cuda_detail::for_each_item(*this, "fill", n, [=] __device__(index_t i) { p[i] = v; });
}

template <class T>
void cuda::copy(T* dst, const T* src, index_t n) const {
    if (n <= 0) return;
    check(cudaMemcpyAsync(dst, src, std::size_t(n) * sizeof(T), cudaMemcpyDeviceToDevice, ctx_->stream), "cudaMemcpyAsync");
}

namespace cuda_detail {
/// A view's shape and strides, passed by value to the kernel.
struct strided_view {
    static constexpr int max_dims = 8;
    int dims = 0;
    index_t shape[max_dims] = {}, strides[max_dims] = {};
};
}  // namespace cuda_detail

template <class T>
void cuda::copy_strided(T* dst, const T* src, const std::vector<index_t>& shape, const std::vector<index_t>& strides) const {
    cuda_detail::strided_view v;
    ALIGNGPT_CHECK(shape.size() == strides.size() && shape.size() <= std::size_t(v.max_dims), "cuda backend: copy_strided of ",
                   shape.size(), " dimensions (at most ", v.max_dims, ")");
    v.dims = int(shape.size());
    index_t n = 1;
    for (int d = 0; d < v.dims; d++)
        v.shape[d] = shape[std::size_t(d)], v.strides[d] = strides[std::size_t(d)], n *= shape[std::size_t(d)];
    cuda_detail::for_each_item(*this, "copy_strided", n, [=] __device__(index_t i) {
        index_t s = 0, rest = i;  // i in row-major order of shape
        for (int d = v.dims - 1; d >= 0; d--) {
            s += (rest % v.shape[d]) * v.strides[d];
            rest /= v.shape[d];
        }
        dst[i] = src[s];
    });
}

template <class T>
void cuda::accumulate(T* dst, const T* src, index_t n) const {
    cuda_detail::for_each_item(*this, "accumulate", n, [=] __device__(index_t i) { exact::accumulate(i, dst, src); });
}

#define ALIGNGPT_CUDA_MEMORY(T)                                                                                        \
    template void cuda::fill<T>(T*, index_t, T) const;                                                                 \
    template void cuda::copy<T>(T*, const T*, index_t) const;                                                          \
    template void cuda::copy_strided<T>(T*, const T*, const std::vector<index_t>&, const std::vector<index_t>&) const; \
    template void cuda::accumulate<T>(T*, const T*, index_t) const;
ALIGNGPT_CUDA_MEMORY(float)
ALIGNGPT_CUDA_MEMORY(double)
ALIGNGPT_CUDA_MEMORY(std::int64_t)
#undef ALIGNGPT_CUDA_MEMORY

}  // namespace aligngpt::backend
