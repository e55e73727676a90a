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
#include <sys/mman.h>

#include "aligngpt/config.h"

namespace aligngpt::backend {

namespace detail {
/// Owning, 64-byte aligned, zero-initialised host array (one cache line, one AVX-512 vector).
/// Buffers of 1 MiB or more come from anonymous mmap: the kernel hands out zero pages on first
/// touch, so a model whose weights are replaced at load (or kept 16-bit elsewhere) never pays for
/// the zeros it did not use (a 7B model constructed in f32 would otherwise touch 27 GB).
template <class T, std::size_t Align = 64>
class aligned_host_buffer {
    static constexpr std::size_t mmap_threshold = std::size_t(1) << 20;

public:
    aligned_host_buffer() = default;
    explicit aligned_host_buffer(index_t n) : n_(n) {
        ALIGNGPT_CHECK(n >= 0, "aligned_host_buffer: negative size ", n);
        ALIGNGPT_CHECK(std::size_t(n) <= (std::size_t(-1) - Align) / sizeof(T), "aligned_host_buffer: ", n,
                       " elements overflow the address space");
        if (n == 0) return;
        bytes_ = ((std::size_t(n) * sizeof(T) + Align - 1) / Align) * Align;
        if (bytes_ >= mmap_threshold) {
            void* m = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) throw std::bad_alloc();
            p_ = static_cast<T*>(m);  // page-aligned, zero-filled on first touch
#if defined(MADV_HUGEPAGE)
            ::madvise(m, bytes_, MADV_HUGEPAGE);  // activations are rewritten each forward: 2 MiB faults, not 4 KiB
#endif
            mapped_ = true;
            return;
        }
        p_ = static_cast<T*>(std::aligned_alloc(Align, bytes_));
        if (!p_) throw std::bad_alloc();
        std::memset(static_cast<void*>(p_), 0, bytes_);
    }
    aligned_host_buffer(const aligned_host_buffer&) = delete;
    aligned_host_buffer& operator=(const aligned_host_buffer&) = delete;
    aligned_host_buffer(aligned_host_buffer&& o) noexcept
        : p_(o.p_), n_(o.n_), bytes_(o.bytes_), mapped_(o.mapped_) {
        o.p_ = nullptr, o.n_ = 0, o.bytes_ = 0, o.mapped_ = false;
    }
    aligned_host_buffer& operator=(aligned_host_buffer&& o) noexcept {
        if (this != &o) {
            release();
            p_ = o.p_, n_ = o.n_, bytes_ = o.bytes_, mapped_ = o.mapped_;
            o.p_ = nullptr, o.n_ = 0, o.bytes_ = 0, o.mapped_ = false;
        }
        return *this;
    }
    ~aligned_host_buffer() { release(); }
    T* data() { return p_; }
    const T* data() const { return p_; }
    index_t size() const { return n_; }

private:
    void release() {
        if (!p_) return;
        if (mapped_) ::munmap(static_cast<void*>(p_), bytes_);
        else std::free(p_);
        p_ = nullptr;
    }
    T* p_ = nullptr;
    index_t n_ = 0;
    std::size_t bytes_ = 0;
    bool mapped_ = false;
};
}  // namespace detail

struct cpu {
    static constexpr const char* name = "cpu";
    template <class T>
    using buffer = detail::aligned_host_buffer<T, 64>;
    void synchronize() const {}
};

}  // namespace aligngpt::backend
