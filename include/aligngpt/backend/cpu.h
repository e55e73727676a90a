#pragma once
// The CPU backend: the definition of "correct" for every other backend.
//
// A Backend is a policy type (mlpack's MatType idea, nlohmann's basic_json<> idea) that provides
//   static constexpr const char* name;          for messages and benchmark labels
//   template <class T> using buffer = ...;      owning storage with .data(), .size(), constructible from (n)
//   void synchronize() const;                   waits for queued work (no-op here)
// plus an overload  ops::<op>_forward/_backward(const Backend&, ...)  for every op in ops/.
// Model code names only the Backend template parameter, so a CUDA policy (backend/cuda/) is added
// by writing those overloads; no model file changes and there is no runtime registry.
//
// Results of the CPU backend never depend on the number of OpenMP threads (see docs/design.md).
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

#include "aligngpt/config.h"

namespace aligngpt::backend {

namespace detail {
/// Owning, 64-byte aligned, zero-initialised host array (one cache line, one AVX-512 vector).
template <class T, std::size_t Align = 64>
class aligned_host_buffer {
public:
    aligned_host_buffer() = default;
    explicit aligned_host_buffer(index_t n) : n_(n) {
        ALIGNGPT_CHECK(n >= 0, "aligned_host_buffer: negative size ", n);
        if (n == 0) return;
        const std::size_t bytes = ((std::size_t(n) * sizeof(T) + Align - 1) / Align) * Align;
        p_ = static_cast<T*>(std::aligned_alloc(Align, bytes));
        if (!p_) throw std::bad_alloc();
        std::memset(static_cast<void*>(p_), 0, bytes);
    }
    aligned_host_buffer(const aligned_host_buffer&) = delete;
    aligned_host_buffer& operator=(const aligned_host_buffer&) = delete;
    aligned_host_buffer(aligned_host_buffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
    aligned_host_buffer& operator=(aligned_host_buffer&& o) noexcept {
        if (this != &o) { std::free(p_); p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0; }
        return *this;
    }
    ~aligned_host_buffer() { std::free(p_); }
    T* data() { return p_; }
    const T* data() const { return p_; }
    index_t size() const { return n_; }

private:
    T* p_ = nullptr;
    index_t n_ = 0;
};
}  // namespace detail

struct cpu {
    static constexpr const char* name = "cpu";
    template <class T>
    using buffer = detail::aligned_host_buffer<T, 64>;
    void synchronize() const {}
};

}  // namespace aligngpt::backend
