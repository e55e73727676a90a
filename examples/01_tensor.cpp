// 01: tensors, views, the counter-based RNG, and the adaptors to xtensor and Eigen.
//   build/examples/example_01_tensor
#include <cstdio>
#include <iostream>
#include <xtensor/xio.hpp>

#include "aligngpt/rng.h"
#include "aligngpt/tensor.h"
#include "aligngpt/tensor_adaptors.h"

using namespace aligngpt;

int main() {
    tensor<float> x({2, 3});  // zeros, row-major, 64-byte aligned
    rng::fill_uniform(x.data(), x.numel(), /*seed=*/42, /*stream=*/rng::fnv1a64("x"), 1.f);
    std::cout << "x =\n" << as_xtensor(x) << "\n";

    tensor<float> xt = x.transpose(0, 1);  // a view: no copy
    std::printf("x^T shape [%lld,%lld], strides [%lld,%lld], shares storage: %s\n", (long long)xt.size(0), (long long)xt.size(1),
                (long long)xt.strides()[0], (long long)xt.strides()[1], xt.shares_storage_with(x) ? "yes" : "no");

    tensor<float> row = x.slice(0, 1, 2);  // second row, also a view
    row.at({0, 0}) = 100.f;                // writes through to x
    std::printf("x[1,0] after writing through the view: %g\n", x.at({1, 0}));

    auto m = as_eigen(x);  // Eigen::Map for reference algebra
    std::cout << "x x^T (Eigen, reference algebra only) =\n" << m * m.transpose() << "\n";

    // Same (seed, stream, index) -> same number, on any thread, in C++ or Python (tests/tools/golden/common.py).
    std::printf("rng::uniform(42, fnv1a64(\"x\"), 0, 1) = %.9g\n", rng::uniform(42, rng::fnv1a64("x"), 0, 1.f));
    return 0;
}
