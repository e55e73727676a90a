#pragma once
// How backend::cuda runs a work item (backend/cuda/exact.h) once per index: one thread each, in
// blocks of 256, on the backend's stream. Device code: included by the .cu files only.
#include <cuda_runtime.h>

#include "aligngpt/backend/cuda.h"
#include "aligngpt/backend/cuda/exact.h"

namespace aligngpt::backend::cuda_detail {

template <class F>
__global__ void each_item_kernel(index_t n, F f) {
    const index_t i = index_t(blockIdx.x) * index_t(blockDim.x) + index_t(threadIdx.x);
    if (i < n) f(i);
}

/// f(i) for i in [0, n): each item on its own thread, so the order across items is free and the
/// order within one item is the work item's.
template <class F>
void for_each_item(const cuda& be, const char* kernel, index_t n, F f) {
    if (n <= 0) return;
    constexpr int threads = 256;
    const index_t blocks = (n + threads - 1) / threads;
    ALIGNGPT_CHECK(blocks <= index_t(0x7fffffff), "cuda backend: ", kernel, " over ", n, " items exceeds one grid");
    each_item_kernel<<<unsigned(blocks), threads, 0, static_cast<cudaStream_t>(be.stream())>>>(n, f);
    be.launched(kernel);
}

}  // namespace aligngpt::backend::cuda_detail
