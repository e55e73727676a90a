#pragma once
// tensor<T, Backend>: an N-d array with row-major shape/strides over shared, aligned storage.
//
// Views (reshape of a contiguous tensor, slice, transpose, select) share storage and only change
// offset/shape/strides; contiguous() and clone() copy. Kernels in ops/ take raw pointers plus
// sizes (llm.c style), so a tensor is mostly a way to own memory and describe it.
//
// A tensor is allocated by a backend object and remembers it: ops run on their inputs' backend.
// data() is a pointer in the backend's memory; only host_accessible backends (backend::cpu) let
// the host dereference it (at(), the adaptors). Everything else goes through the backend
// (fill, clone, to_vector, from), so the same code runs where the host cannot read the memory.
// backend::cpu has a shared instance, used when no backend is named: tensor<float> x({2, 3}).
//
// Adaptors for readable code outside the bit-defining kernels:
//   as_xtensor()  an xt::adapt view (N-d expressions, printing, slicing in tests and tools)
//   as_eigen()    an Eigen::Map of a contiguous 2-d tensor (reference algebra, solvers)
//
//   tensor<float> x({2, 3});            // zeros
//   x.at({1, 2}) = 5.f;
//   auto xt = x.transpose(0, 1);        // view, shape [3, 2], strides [1, 3]
#include <algorithm>
#include <initializer_list>
#include <memory>
#include <numeric>
#include <vector>

#include "aligngpt/backend/cpu.h"
#include "aligngpt/config.h"

namespace aligngpt {

using shape_t = std::vector<index_t>;

/// The element count; the product of the nonzero dims must fit index_t (so every stride does too).
inline index_t numel_of(const shape_t& s) {
    index_t n = 1, nonzero = 1;
    for (index_t d : s) {
        ALIGNGPT_CHECK(d >= 0, "tensor: negative dimension in shape ", detail::shape_str(s));
        ALIGNGPT_CHECK(d == 0 || !__builtin_mul_overflow(nonzero, d, &nonzero), "tensor: element count of shape ",
                       detail::shape_str(s), " overflows int64");
        n *= d;  // |n| <= nonzero
    }
    return n;
}

inline shape_t row_major_strides(const shape_t& s) {
    shape_t st(s.size());
    index_t acc = 1;
    for (size_t i = s.size(); i-- > 0;) {
        st[i] = acc;
        acc *= s[i];
    }
    return st;
}

template <class T, class Backend = backend::cpu>
class tensor {
public:
    using value_type = T;
    using buffer_type = typename Backend::template buffer<T>;

    tensor() = default;
    /// A zero-filled contiguous tensor of the given shape, allocated by `be`.
    tensor(shape_t shape, const Backend& be)
        : storage_(std::make_shared<buffer_type>(be.template allocate<T>(numel_of(shape)))),
          be_(&be),
          shape_(std::move(shape)),
          strides_(row_major_strides(shape_)) {}
    /// The same on the backend's shared instance (backend::cpu; a backend with state has none).
    explicit tensor(shape_t shape) : tensor(std::move(shape), Backend::instance()) {}
    tensor(std::initializer_list<index_t> shape) : tensor(shape_t(shape)) {}

    /// A contiguous tensor holding a copy of host `values` (size must equal the shape's element count).
    static tensor from(const std::vector<T>& values, shape_t shape, const Backend& be = Backend::instance()) {
        tensor t(std::move(shape), be);
        ALIGNGPT_CHECK(index_t(values.size()) == t.numel(), "tensor::from: ", values.size(), " values for shape ",
                       detail::shape_str(t.shape()));
        be.from_host(t.data(), values.data(), t.numel());
        return t;
    }

    bool defined() const { return storage_ != nullptr; }
    const shape_t& shape() const { return shape_; }
    const shape_t& strides() const { return strides_; }
    int dim() const { return int(shape_.size()); }
    index_t size(int d) const { return shape_.at(size_t(d < 0 ? d + dim() : d)); }
    index_t numel() const { return numel_of(shape_); }
    index_t offset() const { return offset_; }
    /// The backend that allocated this tensor (undefined tensor: none).
    const Backend& backend() const {
        ALIGNGPT_CHECK(be_ != nullptr, "tensor::backend: undefined tensor");
        return *be_;
    }

    T* data() { return storage_ ? storage_->data() + offset_ : nullptr; }
    const T* data() const { return storage_ ? storage_->data() + offset_ : nullptr; }
    /// A host copy of the elements in row-major order (an explicit transfer on a device backend).
    std::vector<T> to_vector() const {
        const tensor c = contiguous();
        std::vector<T> v(size_t(c.numel()));
        if (!v.empty()) c.backend().to_host(v.data(), c.data(), c.numel());
        return v;
    }

    bool is_contiguous() const { return strides_ == row_major_strides(shape_); }
    bool shares_storage_with(const tensor& o) const { return storage_ == o.storage_; }

    T& at(std::initializer_list<index_t> idx) requires Backend::host_accessible { return data()[linear_index(idx)]; }
    const T& at(std::initializer_list<index_t> idx) const requires Backend::host_accessible { return data()[linear_index(idx)]; }

    /// View with a new shape; the tensor must be contiguous. One dimension may be -1.
    tensor reshape(shape_t s) const {
        ALIGNGPT_CHECK(is_contiguous(), "reshape: tensor of shape ", detail::shape_str(shape_),
                       " is not contiguous; call contiguous() first");
        index_t known = 1, infer = -1;
        for (size_t i = 0; i < s.size(); i++) {
            if (s[i] == -1) {
                ALIGNGPT_CHECK(infer < 0, "reshape: more than one -1 in ", detail::shape_str(s));
                infer = index_t(i);
            } else {
                known *= s[i];
            }
        }
        if (infer >= 0) s[size_t(infer)] = known ? numel() / known : 0;
        ALIGNGPT_CHECK(numel_of(s) == numel(), "reshape: cannot view ", detail::shape_str(shape_), " as ", detail::shape_str(s));
        tensor v = *this;
        v.shape_ = s;
        v.strides_ = row_major_strides(s);
        return v;
    }

    /// View of [begin, end) along dimension d.
    tensor slice(int d, index_t begin, index_t end) const {
        d = d < 0 ? d + dim() : d;
        ALIGNGPT_CHECK(d >= 0 && d < dim(), "slice: dimension ", d, " out of range for shape ", detail::shape_str(shape_));
        ALIGNGPT_CHECK(0 <= begin && begin <= end && end <= shape_[size_t(d)], "slice: range [", begin, ",", end,
                       ") out of bounds for dimension ", d, " of shape ", detail::shape_str(shape_));
        tensor v = *this;
        v.offset_ += begin * strides_[size_t(d)];
        v.shape_[size_t(d)] = end - begin;
        return v;
    }

    /// View with dimensions a and b exchanged.
    tensor transpose(int a, int b) const {
        a = a < 0 ? a + dim() : a;
        b = b < 0 ? b + dim() : b;
        ALIGNGPT_CHECK(a >= 0 && a < dim() && b >= 0 && b < dim(), "transpose: dims (", a, ",", b, ") out of range for shape ",
                       detail::shape_str(shape_));
        tensor v = *this;
        std::swap(v.shape_[size_t(a)], v.shape_[size_t(b)]);
        std::swap(v.strides_[size_t(a)], v.strides_[size_t(b)]);
        return v;
    }

    /// A contiguous copy (or *this if already contiguous).
    tensor contiguous() const {
        if (is_contiguous()) return *this;
        return clone();
    }

    /// A contiguous deep copy.
    tensor clone() const {
        tensor out(shape_, backend());
        if (is_contiguous())
            backend().copy(out.data(), data(), numel());
        else
            backend().copy_strided(out.data(), data(), shape_, strides_);
        return out;
    }

    void fill(T v) {
        ALIGNGPT_CHECK(is_contiguous(), "fill: tensor is not contiguous");
        if (numel() > 0) backend().fill(data(), numel(), v);
    }

private:
    index_t linear_index(std::initializer_list<index_t> idx) const {
        ALIGNGPT_CHECK(int(idx.size()) == dim(), "tensor::at: ", idx.size(), " indices for a ", dim(), "-d tensor");
        index_t off = 0;
        int k = 0;
        for (index_t i : idx) {
            ALIGNGPT_CHECK(i >= 0 && i < shape_[size_t(k)], "tensor::at: index ", i, " out of range for dim ", k, " of shape ",
                           detail::shape_str(shape_));
            off += i * strides_[size_t(k++)];
        }
        return off;
    }

    std::shared_ptr<buffer_type> storage_;
    const Backend* be_ = nullptr;
    index_t offset_ = 0;
    shape_t shape_;
    shape_t strides_;
};

}  // namespace aligngpt
