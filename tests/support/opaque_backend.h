#pragma once
// backend: a second backend, for tests, whose memory the host cannot read.
//
// It stands in for a GPU. Tensor memory lives in an arena, and the pointers it hands out point
// into a separate address range mapped PROT_NONE: any host code that dereferences tensor memory
// (instead of going through the backend) crashes the test. Its kernels translate those pointers
// to the arena and run the CPU kernels there, so results must equal backend::cpu bit for bit; what
// the test proves is that model code reaches memory only through the backend. Host transfers
// (to_host, from_host) and kernel launches are counted.
//
//   test::opaque dev;                                   // 1 GiB of address space, bump-allocated
//   models::llama_model<float, test::opaque> m(cfg, dev);
//   dev.reset_counts(); m.forward(...); CHECK(dev.to_host_calls == 0);
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "aligngpt/aligngpt.h"

namespace aligngpt::test {

class opaque {
public:
    static constexpr const char* name = "opaque";
    static constexpr bool host_accessible = false;

    /// Storage handed out by allocate(): a handle into the unreadable range. The arena owns the
    /// memory (a bump allocator, freed with the backend), so a buffer only remembers where it is.
    template <class T>
    class buffer {
    public:
        buffer() = default;
        buffer(T* p, index_t n) : p_(p), n_(n) {}
        T* data() { return p_; }
        const T* data() const { return p_; }
        index_t size() const { return n_; }

    private:
        T* p_ = nullptr;
        index_t n_ = 0;
    };

    explicit opaque(std::size_t capacity = std::size_t(1) << 30) : cap_(capacity) {
        void* h = ::mmap(nullptr, cap_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        void* s = ::mmap(nullptr, cap_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (h == MAP_FAILED || s == MAP_FAILED) throw std::bad_alloc();
        handles_ = static_cast<char*>(h), store_ = static_cast<char*>(s);
    }
    opaque(const opaque&) = delete;
    opaque& operator=(const opaque&) = delete;
    ~opaque() {
        ::munmap(handles_, cap_);
        ::munmap(store_, cap_);
    }

    template <class T>
    buffer<T> allocate(index_t n) const {
        const std::size_t bytes = (std::size_t(n) * sizeof(T) + 63) / 64 * 64;
        ALIGNGPT_CHECK(used_ + bytes <= cap_, "opaque backend: arena of ", cap_, " bytes exhausted");
        T* p = reinterpret_cast<T*>(handles_ + used_);  // zero: the arena is never reused
        used_ += bytes;
        return buffer<T>(p, n);
    }

    // The memory primitives run "on the device": no host transfer.
    template <class T>
    void fill(T* p, index_t n, T v) const {
        cpu().fill(real(p), n, v);
    }
    template <class T>
    void copy(T* dst, const T* src, index_t n) const {
        cpu().copy(real(dst), real(src), n);
    }
    template <class T>
    void copy_strided(T* dst, const T* src, const std::vector<index_t>& shape, const std::vector<index_t>& strides) const {
        cpu().copy_strided(real(dst), real(src), shape, strides);
    }
    template <class T>
    void accumulate(T* dst, const T* src, index_t n) const {
        cpu().accumulate(real(dst), real(src), n);
    }

    template <class T>
    void to_host(T* host, const T* src, index_t n) const {
        ALIGNGPT_CHECK(!is_handle(host) && is_handle(src), "opaque backend: to_host needs a device source and a host target");
        to_host_calls++, to_host_bytes += std::size_t(n) * sizeof(T);
        cpu().copy(host, real(src), n);
    }
    template <class T>
    void from_host(T* dst, const T* host, index_t n) const {
        ALIGNGPT_CHECK(is_handle(dst) && !is_handle(host), "opaque backend: from_host needs a host source and a device target");
        from_host_calls++, from_host_bytes += std::size_t(n) * sizeof(T);
        cpu().copy(real(dst), host, n);
    }
    void synchronize() const {}

    /// A kernel argument as the CPU kernel needs it: handles become arena addresses, the rest
    /// (sizes, host-side ids and masks, tables, packed weights) passes through.
    template <class U>
    decltype(auto) real(U&& x) const {
        if constexpr (std::is_pointer_v<std::remove_cvref_t<U>>) {
            using P = std::remove_cvref_t<U>;
            if (!is_handle(x)) return P(x);
            const auto off = reinterpret_cast<std::uintptr_t>(x) - reinterpret_cast<std::uintptr_t>(handles_);
            return reinterpret_cast<P>(store_ + off);
        } else {
            return std::forward<U>(x);
        }
    }
    bool is_handle(const void* p) const {
        const auto a = reinterpret_cast<std::uintptr_t>(p), h = reinterpret_cast<std::uintptr_t>(handles_);
        return a >= h && a < h + cap_;
    }
    static const backend::cpu& cpu() { return backend::cpu::instance(); }

    void reset_counts() const { to_host_calls = from_host_calls = 0, to_host_bytes = from_host_bytes = 0, launches = 0; }
    mutable index_t to_host_calls = 0, from_host_calls = 0, launches = 0;
    mutable std::size_t to_host_bytes = 0, from_host_bytes = 0;

private:
    std::size_t cap_;
    char* handles_ = nullptr;  // PROT_NONE: what data() returns
    char* store_ = nullptr;    // the memory behind it
    mutable std::size_t used_ = 0;
};

// Every kernel of ops/ for this backend: found by argument-dependent lookup on `opaque`, it runs
// the CPU kernel on the translated pointers. An op without a line here fails to compile.
#define ALIGNGPT_OPAQUE_KERNEL(op)                                                 \
    template <class... A>                                                          \
    decltype(auto) op(const opaque& be, A&&... a) {                                \
        be.launches++;                                                             \
        return ::aligngpt::ops::op(opaque::cpu(), be.real(std::forward<A>(a))...); \
    }
ALIGNGPT_OPAQUE_KERNEL(linear_forward)
ALIGNGPT_OPAQUE_KERNEL(linear_backward)
ALIGNGPT_OPAQUE_KERNEL(linear_packed)
ALIGNGPT_OPAQUE_KERNEL(packed_unpack)
ALIGNGPT_OPAQUE_KERNEL(rms_norm_forward)
ALIGNGPT_OPAQUE_KERNEL(rms_norm_backward)
ALIGNGPT_OPAQUE_KERNEL(layer_norm_forward)
ALIGNGPT_OPAQUE_KERNEL(layer_norm_backward)
ALIGNGPT_OPAQUE_KERNEL(gelu_forward)
ALIGNGPT_OPAQUE_KERNEL(gelu_backward)
ALIGNGPT_OPAQUE_KERNEL(quick_gelu_forward)
ALIGNGPT_OPAQUE_KERNEL(quick_gelu_backward)
ALIGNGPT_OPAQUE_KERNEL(silu_forward)
ALIGNGPT_OPAQUE_KERNEL(silu_backward)
ALIGNGPT_OPAQUE_KERNEL(swiglu_forward)
ALIGNGPT_OPAQUE_KERNEL(swiglu_backward)
ALIGNGPT_OPAQUE_KERNEL(add_forward)
ALIGNGPT_OPAQUE_KERNEL(add_backward)
ALIGNGPT_OPAQUE_KERNEL(mul_forward)
ALIGNGPT_OPAQUE_KERNEL(mul_backward)
ALIGNGPT_OPAQUE_KERNEL(scale_forward)
ALIGNGPT_OPAQUE_KERNEL(scale_backward)
ALIGNGPT_OPAQUE_KERNEL(add_row_forward)
ALIGNGPT_OPAQUE_KERNEL(add_row_backward)
ALIGNGPT_OPAQUE_KERNEL(embedding_forward)
ALIGNGPT_OPAQUE_KERNEL(embedding_backward)
ALIGNGPT_OPAQUE_KERNEL(copy_block)
ALIGNGPT_OPAQUE_KERNEL(transpose_copy)
ALIGNGPT_OPAQUE_KERNEL(sum_forward)
ALIGNGPT_OPAQUE_KERNEL(sum_backward)
ALIGNGPT_OPAQUE_KERNEL(softmax_forward)
ALIGNGPT_OPAQUE_KERNEL(softmax_backward)
ALIGNGPT_OPAQUE_KERNEL(cross_entropy_forward)
ALIGNGPT_OPAQUE_KERNEL(cross_entropy_backward)
ALIGNGPT_OPAQUE_KERNEL(attention_forward)
ALIGNGPT_OPAQUE_KERNEL(attention_backward)
ALIGNGPT_OPAQUE_KERNEL(rope_forward)
ALIGNGPT_OPAQUE_KERNEL(rope_backward)
ALIGNGPT_OPAQUE_KERNEL(patch_embed_forward)
ALIGNGPT_OPAQUE_KERNEL(patch_embed_backward)
ALIGNGPT_OPAQUE_KERNEL(l2_normalize_forward)
ALIGNGPT_OPAQUE_KERNEL(l2_normalize_backward)
ALIGNGPT_OPAQUE_KERNEL(masked_mean_forward)
ALIGNGPT_OPAQUE_KERNEL(masked_mean_backward)
ALIGNGPT_OPAQUE_KERNEL(batched_matvec_forward)
ALIGNGPT_OPAQUE_KERNEL(batched_matvec_backward)
#undef ALIGNGPT_OPAQUE_KERNEL

}  // namespace aligngpt::test
