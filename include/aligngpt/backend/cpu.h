#pragma once
// The CPU backend: the definition of "correct" for every other backend (docs/design.md, "Backend
// policy").
//
// A backend is an object the caller owns: tensors are allocated by it and remember it, models are
// built on it, and every op runs on the backend of its inputs. What a backend provides:
//   name, host_accessible                         for messages; whether data() may be read by the host
//   template <class T> using buffer = ...;        owning storage with .data(), .size()
//   allocate<T>(n)                                 a zero-filled buffer
//   fill, copy, copy_strided, accumulate           the memory primitives that the tape and tensor use
//   to_host, from_host                             the only way host code reads or writes tensor memory
//   synchronize()                                  waits for queued work
// plus, for every op in ops/, the kernels  <op>_forward(const Backend&, ...) / <op>_backward(...),
// found by argument-dependent lookup on the backend type. backend::cpu derives from
// ops::cpu_kernels so that lookup finds the kernels written in ops/; another backend declares its
// overloads in its own namespace (tests/support/opaque_backend.h is such a backend). No model file
// names a backend, and there is no registry or dispatcher.
//
// Results of the CPU backend never depend on the number of OpenMP threads (see docs/design.md).
#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>
#include <sys/mman.h>

#include "aligngpt/config.h"

namespace aligngpt::ops {
/// A base of backend::cpu: argument-dependent lookup then searches aligngpt::ops, so an op's
/// unqualified kernel call `x_forward(be, ...)` finds the CPU kernels defined there.
struct cpu_kernels {};
}  // namespace aligngpt::ops

namespace aligngpt::backend {

namespace detail {
/// Freed mmap blocks kept for the next allocation of the same size. A training step allocates the
/// same activation sizes every step; a fresh block costs a page fault per 2 MiB page with the
/// kernel's clearing, and its munmap a TLB shootdown: reusing blocks made a small stage-2 step
/// 1.8 times as fast on 2 threads (docs/benchmarks.md "Freed blocks reused, attention backward as
/// GEMMs (2026-12-01)"). A reused block is cleared with memset instead, so it is zero like a
/// fresh one. Only blocks under 64 MiB are kept (larger ones are weights, freed rarely, and
/// possibly never touched), at most ALIGNGPT_CPU_BLOCK_CACHE_MIB in all (default 512; 0 keeps
/// none), the oldest evicted first. Process-wide, behind a mutex; never destroyed, so a static
/// tensor may free its block during exit.
class mapped_block_cache {
public:
    static constexpr std::size_t max_block = std::size_t(64) << 20;

    static mapped_block_cache& instance() {
        static mapped_block_cache* c = new mapped_block_cache();
        return *c;
    }
    /// A cleared block of exactly `bytes`, or nullptr.
    void* take(std::size_t bytes) {
        if (limit_ == 0 || bytes >= max_block) return nullptr;
        void* p = nullptr;
        {
            std::lock_guard<std::mutex> g(mu_);
            for (std::size_t i = blocks_.size(); i-- > 0;)
                if (blocks_[i].bytes == bytes) {
                    p = blocks_[i].p;
                    blocks_.erase(blocks_.begin() + std::ptrdiff_t(i));
                    cached_ -= bytes;
                    break;
                }
        }
        if (p) std::memset(p, 0, bytes);
        return p;
    }
    /// Keeps the block, or unmaps it when it is too large or the cache is full.
    void give(void* p, std::size_t bytes) {
        if (limit_ == 0 || bytes >= max_block || bytes > limit_) return void(::munmap(p, bytes));
        std::vector<block> out;
        {
            std::lock_guard<std::mutex> g(mu_);
            std::size_t drop = 0;
            while (cached_ + bytes > limit_ && drop < blocks_.size()) cached_ -= blocks_[drop++].bytes;
            out.assign(blocks_.begin(), blocks_.begin() + std::ptrdiff_t(drop));
            blocks_.erase(blocks_.begin(), blocks_.begin() + std::ptrdiff_t(drop));
            blocks_.push_back({p, bytes});
            cached_ += bytes;
        }
        for (const block& b : out) ::munmap(b.p, b.bytes);
    }

private:
    struct block {
        void* p;
        std::size_t bytes;
    };
    mapped_block_cache() {
        if (const char* e = std::getenv("ALIGNGPT_CPU_BLOCK_CACHE_MIB")) {
            char* end = nullptr;
            const unsigned long long mib = std::strtoull(e, &end, 10);
            if (end != e && *end == '\0' && mib <= (1ull << 20)) limit_ = std::size_t(mib) << 20;
        }
    }
    std::mutex mu_;
    std::vector<block> blocks_;  ///< oldest first
    std::size_t cached_ = 0, limit_ = std::size_t(512) << 20;
};

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
            mapped_ = true;
            if (void* c = mapped_block_cache::instance().take(bytes_)) {
                p_ = static_cast<T*>(c);
                return;
            }
            void* m = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m == MAP_FAILED) throw std::bad_alloc();
            p_ = static_cast<T*>(m);  // page-aligned, zero-filled on first touch
#if defined(MADV_HUGEPAGE)
            ::madvise(m, bytes_, MADV_HUGEPAGE);  // activations are rewritten each forward: 2 MiB faults, not 4 KiB
#endif
            return;
        }
        p_ = static_cast<T*>(std::aligned_alloc(Align, bytes_));
        if (!p_) throw std::bad_alloc();
        std::memset(static_cast<void*>(p_), 0, bytes_);
    }
    aligned_host_buffer(const aligned_host_buffer&) = delete;
    aligned_host_buffer& operator=(const aligned_host_buffer&) = delete;
    aligned_host_buffer(aligned_host_buffer&& o) noexcept : p_(o.p_), n_(o.n_), bytes_(o.bytes_), mapped_(o.mapped_) {
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
        if (mapped_)
            mapped_block_cache::instance().give(static_cast<void*>(p_), bytes_);
        else
            std::free(p_);
        p_ = nullptr;
    }
    T* p_ = nullptr;
    index_t n_ = 0;
    std::size_t bytes_ = 0;
    bool mapped_ = false;
};
}  // namespace detail

struct cpu : ops::cpu_kernels {
    static constexpr const char* name = "cpu";
    static constexpr bool host_accessible = true;
    template <class T>
    using buffer = detail::aligned_host_buffer<T, 64>;

    /// The CPU backend has no state (threads are OpenMP's), so one shared instance serves every
    /// tensor and model that does not name a backend. Backends with state offer no instance().
    static const cpu& instance() {
        static const cpu c;
        return c;
    }

    template <class T>
    buffer<T> allocate(index_t n) const {
        return buffer<T>(n);
    }

    template <class T>
    void fill(T* p, index_t n, T v) const {
        std::fill(p, p + n, v);
    }
    template <class T>
    void copy(T* dst, const T* src, index_t n) const {
        std::copy(src, src + n, dst);
    }
    /// dst (contiguous) = the elements of src at `strides`, in row-major order of `shape`.
    template <class T>
    void copy_strided(T* dst, const T* src, const std::vector<index_t>& shape, const std::vector<index_t>& strides) const {
        const int D = int(shape.size());
        index_t n = 1;
        for (index_t d : shape) n *= d;
        std::vector<index_t> idx(size_t(D), 0);
        for (index_t i = 0; i < n; i++) {
            index_t s = 0;
            for (int k = 0; k < D; k++) s += idx[size_t(k)] * strides[size_t(k)];
            dst[i] = src[s];
            for (int k = D; k-- > 0;) {
                if (++idx[size_t(k)] < shape[size_t(k)]) break;
                idx[size_t(k)] = 0;
            }
        }
    }
    /// dst[i] += src[i]: gradient accumulation (elementwise, so any thread split gives the same bits).
    template <class T>
    void accumulate(T* dst, const T* src, index_t n) const {
        ALIGNGPT_OMP_FOR
        for (index_t i = 0; i < n; i++) dst[i] += src[i];
    }
    template <class T>
    void to_host(T* host, const T* src, index_t n) const {
        copy(host, src, n);
    }
    template <class T>
    void from_host(T* dst, const T* host, index_t n) const {
        copy(dst, host, n);
    }
    void synchronize() const {}
};

}  // namespace aligngpt::backend
