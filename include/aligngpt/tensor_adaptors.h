#pragma once
// Adaptors from aligngpt::tensor to xtensor and Eigen, for readable code outside the kernels
// whose bits we promise (tests, tools, reference algebra). They alias the tensor's memory.
#include <Eigen/Core>
#include <xtensor/xadapt.hpp>

#include "aligngpt/tensor.h"

namespace aligngpt {

/// N-d xtensor view of t's elements (any strides).
template <class T>
auto as_xtensor(tensor<T>& t) {
    std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
    std::vector<std::ptrdiff_t> strides(t.strides().begin(), t.strides().end());
    // The extent of the strided region (all strides are non-negative here).
    std::size_t extent = t.numel() ? 1 : 0;
    for (int d = 0; d < t.dim(); d++) extent += std::size_t((t.size(d) - 1) * t.strides()[size_t(d)]);
    return xt::adapt(t.data(), extent, xt::no_ownership(), shape, strides);
}

/// Row-major Eigen matrix map of a contiguous 2-d tensor.
template <class T>
auto as_eigen(tensor<T>& t) {
    ALIGNGPT_CHECK(t.dim() == 2 && t.is_contiguous(), "as_eigen: needs a contiguous 2-d tensor, got shape ",
                   detail::shape_str(t.shape()));
    using mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    return Eigen::Map<mat>(t.data(), t.size(0), t.size(1));
}

}  // namespace aligngpt
