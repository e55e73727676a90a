#pragma once
// Test support: golden fixtures (tests/golden/<name>.safetensors, made by tests/tools/make_golden.py),
// tolerance helpers, and the committed lock of our own bits (tests/golden/bits.lock).
//
// bits.lock holds "name fnv1a64-hex" lines. A test calls CHECK(golden::lock_matches("x", v)); to
// regenerate on purpose, run the test binary once with ALIGNGPT_UPDATE_BITS_LOCK=1 (one process, so
// the file is written once at exit) and review the diff like code.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "aligngpt/io/safetensors.h"
#include "aligngpt/rng.h"
#include "aligngpt/tensor.h"

namespace golden {

using aligngpt::index_t;

inline std::string path(const std::string& name) { return std::string(ALIGNGPT_GOLDEN_DIR) + "/" + name + ".safetensors"; }

/// A fixture file; fails the test loudly (with the regeneration command) if it is missing.
struct fixture {
    aligngpt::io::safetensors_file file;
    template <class T = float>
    std::vector<T> get(const std::string& key) const {
        return file.read_as<T>(key);
    }
    template <class T = float>
    aligngpt::tensor<T> tensor(const std::string& key) const {
        return file.tensor_as<T>(key);
    }
    index_t dim(const std::string& key, int d) const { return file.at(key).shape.at(size_t(d)); }
    const std::vector<index_t>& shape(const std::string& key) const { return file.at(key).shape; }
    bool has(const std::string& key) const { return file.find(key) != nullptr; }
};

inline fixture load(const std::string& name) {
    const std::string p = path(name);
    std::ifstream probe(p);
    REQUIRE_MESSAGE(probe.good(), "missing golden file " << p
                                                         << "; regenerate with: bash scripts/setup-golden && "
                                                            "/usr/bin/python3 tests/tools/make_golden.py");
    return fixture{aligngpt::io::safetensors_file::open(p)};
}

/// max_i |a_i - b_i|
template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); i++) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
    return m;
}

/// max_i |a_i - b_i| / (atol + rtol |b_i|): <= 1 means "within torch.testing.assert_close(rtol, atol)".
template <class A, class B>
double close_ratio(const A& a, const B& b, double rtol, double atol) {
    REQUIRE(a.size() == b.size());
    double m = 0;
    for (size_t i = 0; i < a.size(); i++)
        m = std::max(m, std::abs(double(a[i]) - double(b[i])) / (atol + rtol * std::abs(double(b[i]))));
    return m;
}

template <class T>
std::vector<T> to_vec(const T* p, index_t n) {
    return std::vector<T>(p, p + n);
}

/// FNV-1a 64 over the bytes of a buffer (our bit-identity digest).
inline std::uint64_t fnv1a(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (std::size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
template <class T>
std::uint64_t fnv1a(const std::vector<T>& v) {
    return fnv1a(v.data(), v.size() * sizeof(T));
}

class bits_lock_file {
public:
    static bits_lock_file& instance() {
        static bits_lock_file f;
        return f;
    }
    bool updating() const { return update_; }
    bool matches(const std::string& name, std::uint64_t h) {
        std::lock_guard<std::mutex> g(mu_);
        if (update_) {
            entries_[name] = h;
            dirty_ = true;
            return true;
        }
        auto it = entries_.find(name);
        if (it == entries_.end()) {
            MESSAGE("bits.lock has no entry '" << name << "'; run the tests once with ALIGNGPT_UPDATE_BITS_LOCK=1");
            return false;
        }
        return it->second == h;
    }
    ~bits_lock_file() {
        if (!dirty_) return;
        std::ofstream out(file_);
        for (const auto& [k, v] : entries_) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
            out << k << " " << buf << "\n";
        }
    }

private:
    bits_lock_file() : file_(std::string(ALIGNGPT_GOLDEN_DIR) + "/bits.lock") {
        const char* u = std::getenv("ALIGNGPT_UPDATE_BITS_LOCK");
        update_ = u && std::string(u) == "1";
        std::ifstream in(file_);
        std::string k, v;
        while (in >> k >> v) entries_[k] = std::stoull(v, nullptr, 16);
    }
    std::string file_;
    bool update_ = false, dirty_ = false;
    std::map<std::string, std::uint64_t> entries_;
    std::mutex mu_;
};

/// True if the digest of v equals the committed entry `name` in tests/golden/bits.lock.
template <class T>
bool lock_matches(const std::string& name, const std::vector<T>& v) {
    return bits_lock_file::instance().matches(name, fnv1a(v));
}

/// A tensor filled like tests/tools/golden/common.py hashfill(name, shape, a, seed).
template <class T = float>
aligngpt::tensor<T> hashfill(const std::string& name, aligngpt::shape_t shape, float a, std::uint64_t seed = 0) {
    aligngpt::tensor<T> t(std::move(shape));
    aligngpt::rng::fill_uniform(t.data(), t.numel(), seed, aligngpt::rng::fnv1a64(name), a);
    return t;
}

}  // namespace golden
