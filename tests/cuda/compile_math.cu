// Compile check: the scalar float math (ops/exp.h, ops/log.h, ops/erf.h) is device code too
// (ALIGNGPT_HD), so a CUDA kernel runs the very op sequence the CPU runs. Not built by CMake yet:
//
//   nvcc -std=c++20 --fmad=false -x cu -c tests/cuda/compile_math.cu -Iinclude -isystem /usr/include/eigen3
//
// --fmad=false: nvcc contracts a*b + c into an fma by default, which would change the bits.
#include "aligngpt/ops/erf.h"
#include "aligngpt/ops/exp.h"
#include "aligngpt/ops/log.h"

namespace aligngpt_test_cuda {

/// y[i] = exp(x[i]) + log(x[i]) + erf(x[i]) through the float definitions, and log_of / erf_of /
/// exp_of, the templates the kernels call.
__global__ void math_kernel(float* y, const float* x, int n) {
    const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= n) return;
    namespace ops = aligngpt::ops;
    y[i] = ops::exp_scalar(x[i]) + ops::log_scalar(x[i]) + ops::erf_scalar(x[i]);
    y[i] += ops::exp_of(x[i]) + ops::log_of(x[i]) + ops::erf_of(x[i]);
}

}  // namespace aligngpt_test_cuda
