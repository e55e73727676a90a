#pragma once
// Strict, all-or-nothing filling of named parameters from a checkpoint: one weight file
// (safetensors or PyTorch .bin, told apart by content) or a directory (sharded with an index, or
// single-file). It knows file formats and names, no model: loading a whole AlignGPT directory is
// aligngpt/pretrained.h, above models/.
//
//   io::load_parameters(vit, io::tensor_source::open("clip-vit-large-patch14-336"), {});
//
// load_parameters(module, source, options)
//   Visits the module (visit(f): every parameter, named by its verbatim HF key). Every parameter
//   must exist in the source with the same shape, and a float dtype that widens exactly to f32
//   (F32, BF16, F16). Every source tensor must be consumed, except those matching options.ignore
//   (default: "*.rotary_emb.inv_freq", "*.position_ids": buffers transformers saves and
//   recomputes) or outside options.scope. All problems are collected and thrown as ONE error
//   that lists, by name, the missing, unexpected, wrong-shape and wrong-dtype tensors with their
//   file names. Values are read into fresh tensors and swapped into the module only when
//   everything succeeded: a half-loaded module is never left behind.
//   options.rename maps module-name prefixes to source-key prefixes ({"vision_model.",
//   "vision_tower.vision_tower.vision_model."} reads CLIP from the copy inside an AlignGPT file).
//   Tensor bytes are read from our own read-only mapping and the pages are dropped again
//   (madvise DONTNEED) once consumed, so resident memory holds the model, not the files.
//
// weights_dtype (f32 | bf16 | f16): with bf16/f16 the parameters chosen by options.pack_if
//   (default: every nn::linear weight) are packed once, straight from the mapped file, into
//   ops::packed_weight<bf16|f16> panels when the file holds that very dtype (no rounding, no f32
//   copy). An nn::linear's weight (lm_head's too) goes into its packed slot (its f32 value is then
//   unused); any other packed parameter (a bare matrix that a custom pack_if picks) also gets the
//   exact f32 widening, unless packed_store_only. Every packed weight is in the result's packed store.
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/half.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/io/torch_bin.h"
#include "aligngpt/nn/module.h"
#include "aligngpt/ops/packed.h"

namespace aligngpt::io {

enum class weights_dtype { f32, bf16, f16 };

inline const char* weights_dtype_name(weights_dtype d) {
    return d == weights_dtype::f32 ? "f32" : d == weights_dtype::bf16 ? "bf16" : "f16";
}
inline std::optional<weights_dtype> parse_weights_dtype(std::string_view s) {
    if (s == "f32" || s == "float32") return weights_dtype::f32;
    if (s == "bf16" || s == "bfloat16") return weights_dtype::bf16;
    if (s == "f16" || s == "float16") return weights_dtype::f16;
    return std::nullopt;
}

/// '*' matches any run of characters (including '.'); everything else is literal.
inline bool glob_match(std::string_view pat, std::string_view s) {
    std::size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
    while (i < s.size()) {
        if (p < pat.size() && pat[p] == '*')
            star = p++, mark = i;
        else if (p < pat.size() && pat[p] == s[i])
            p++, i++;
        else if (star != std::string_view::npos)
            p = star + 1, i = ++mark;
        else
            return false;
    }
    while (p < pat.size() && pat[p] == '*') p++;
    return p == pat.size();
}

struct load_options {
    bool quiet = false;           ///< no progress lines
    std::ostream* log = nullptr;  ///< progress goes here (nullptr: std::cerr)
    /// Module-name prefix -> source-key prefix, first match wins.
    std::vector<std::pair<std::string, std::string>> rename{};
    /// Source keys matching any of these globs are skipped (neither loaded nor "unexpected") unless
    /// a parameter asks for them: buffers that transformers saves and recomputes.
    std::vector<std::string> ignore{"*.rotary_emb.inv_freq", "*.position_ids"};
    /// Non-empty: only source keys starting with one of these prefixes are considered at all.
    std::vector<std::string> scope{};
    /// Module parameters matching these globs may be absent from the source (they keep their value).
    std::vector<std::string> allow_missing{};
    weights_dtype dtype = weights_dtype::f32;
    /// Which 2-D parameters bf16/f16 packs, by name (empty: every nn::linear weight).
    std::function<bool(std::string_view)> pack_if{};
    /// bf16/f16: a packed parameter that is not an nn::linear's weight goes to the packed store
    /// only (the module's variable keeps its current value). For callers that use the store.
    bool packed_store_only = false;
};

// ---------------------------------------------------------------------------------------------
// Sources

/// One weight file mapped for reading tensor bytes (safetensors or PyTorch zip, by content).
class raw_weights {
public:
    static std::shared_ptr<const raw_weights> open(const std::string& path) {
        auto r = std::shared_ptr<raw_weights>(new raw_weights());
        unsigned char head[4] = {};
        {
            auto m = mapped_file::open(path);
            if (m->size() >= 4) std::memcpy(head, m->data(), 4);
        }
        // A zip, or torch's legacy pickle magic (80 02 8a 0a: refused with a hint by the reader).
        // A safetensors header length can start with 0x80 (N = 128 + 256 k), so one byte is not enough;
        // 80 02 8a 0a read as N would be 176 MB, above the 100 MB header cap.
        static const unsigned char legacy[4] = {0x80, 0x02, 0x8a, 0x0a};
        if (std::memcmp(head, "PK\x03\x04", 4) == 0 || std::memcmp(head, legacy, 4) == 0)
            r->t_ = std::make_unique<torch_bin_file>(torch_bin_file::open(path));
        else
            r->s_ = std::make_unique<safetensors_file>(safetensors_file::open(path));
        r->path_ = path;
        const auto slash = path.find_last_of('/');
        r->base_ = slash == std::string::npos ? path : path.substr(slash + 1);
        return r;
    }
    const std::string& path() const { return path_; }
    const std::string& basename() const { return base_; }
    const std::vector<tensor_info>& tensors() const { return s_ ? s_->tensors() : t_->tensors(); }
    const tensor_info* find(std::string_view n) const { return s_ ? s_->find(n) : t_->find(n); }
    bool contiguous(const tensor_info& t) const { return s_ ? true : t_->is_contiguous(t); }
    const std::byte* data(const tensor_info& t) const { return s_ ? s_->data(t) : t_->data(t); }

    /// Converts the tensor's elements into out[0..numel) (any alignment; strided views gathered).
    template <class T>
    void read(const tensor_info& t, T* out) const {
        const std::size_t n = std::size_t(t.numel());
        if (contiguous(t)) {
            convert_elements<T>(t.type, data(t), n, out, path_ + ": tensor " + detail::quote_name(t.name));
        } else {
            const std::vector<T> v = t_->read_as<T>(t.name);
            std::copy(v.begin(), v.end(), out);
        }
    }
    /// Drops the mapped pages of the tensor from this process (they are re-read from the page
    /// cache if touched again): resident memory does not accumulate the files.
    void release(const tensor_info& t) const {
        if (t.end <= t.begin) return;
        static const std::uintptr_t page = std::uintptr_t(::sysconf(_SC_PAGESIZE));
        const auto p = reinterpret_cast<std::uintptr_t>(data(t));
        const std::uintptr_t lo = p & ~(page - 1), hi = (p + t.nbytes() + page - 1) & ~(page - 1);
        ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
    }

private:
    raw_weights() = default;
    std::string path_, base_;
    std::unique_ptr<safetensors_file> s_;
    std::unique_ptr<torch_bin_file> t_;
};

/// A set of named tensors drawn from one or more files (a checkpoint directory, a single file,
/// or keys renamed from one). Names are unique.
class tensor_source {
public:
    struct entry {
        std::shared_ptr<const raw_weights> file;
        const tensor_info* info = nullptr;
    };

    tensor_source() = default;
    explicit tensor_source(std::string description) : desc_(std::move(description)) {}

    /// A checkpoint directory (validated as a whole by checkpoint_dir) or a single weight file.
    static tensor_source open(const std::string& path) {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (fs::is_directory(path, ec)) return of(checkpoint_dir::open(path));
        tensor_source s(path);
        s.add_file(raw_weights::open(path));
        return s;
    }
    static tensor_source of(const checkpoint_dir& d) {
        tensor_source s(d.dir());
        for (const weight_file& w : d.files()) s.add_file(raw_weights::open(w.path()));
        return s;
    }

    const std::string& description() const { return desc_; }
    const std::map<std::string, entry, std::less<>>& entries() const { return entries_; }
    const entry* find(std::string_view key) const {
        auto it = entries_.find(key);
        return it == entries_.end() ? nullptr : &it->second;
    }
    std::size_t size() const { return entries_.size(); }

    /// A source whose keys are fn(key) (std::nullopt drops the key). Two keys mapping to one name
    /// are an error naming both.
    tensor_source renamed(const std::function<std::optional<std::string>(const std::string&)>& fn,
                          std::string description = {}) const {
        tensor_source out(description.empty() ? desc_ : description);
        std::map<std::string, std::string> from;
        for (const auto& [k, e] : entries_) {
            auto n = fn(k);
            if (!n) continue;
            ALIGNGPT_CHECK(out.entries_.emplace(*n, e).second, out.desc_, ": keys ", detail::quote_name(from[*n]), " and ",
                           detail::quote_name(k), " both map to ", detail::quote_name(*n));
            from[*n] = k;
        }
        return out;
    }
    /// Adds o's tensors; those with a name already present replace it (o wins).
    void overlay(const tensor_source& o) {
        for (const auto& [k, e] : o.entries_) entries_[k] = e;
        desc_ += " + " + o.desc_;
    }
    /// Keeps only keys for which keep(key) is true.
    void filter(const std::function<bool(const std::string&)>& keep) {
        for (auto it = entries_.begin(); it != entries_.end();) it = keep(it->first) ? std::next(it) : entries_.erase(it);
    }

private:
    void add_file(std::shared_ptr<const raw_weights> f) {
        for (const tensor_info& t : f->tensors()) {
            auto [it, fresh] = entries_.emplace(t.name, entry{f, &t});
            ALIGNGPT_CHECK(fresh, f->path(), ": tensor ", detail::quote_name(t.name), " is also in ", it->second.file->path());
        }
    }
    std::string desc_;
    std::map<std::string, entry, std::less<>> entries_;
};

// ---------------------------------------------------------------------------------------------
// Packed weights, statistics, progress

/// Packed 16-bit Linear weights by parameter name (weights_dtype bf16 / f16).
struct packed_store {
    std::map<std::string, std::shared_ptr<const ops::packed_weight<bf16>>, std::less<>> bf16_weights;
    std::map<std::string, std::shared_ptr<const ops::packed_weight<f16>>, std::less<>> f16_weights;
    std::size_t bytes() const {
        std::size_t n = 0;
        for (const auto& [k, w] : bf16_weights) n += w->bytes();
        for (const auto& [k, w] : f16_weights) n += w->bytes();
        return n;
    }
    std::size_t size() const { return bf16_weights.size() + f16_weights.size(); }
    void merge(packed_store&& o) {
        bf16_weights.merge(o.bf16_weights);
        f16_weights.merge(o.f16_weights);
    }
};

struct load_stats {
    std::size_t tensors = 0, packed = 0;  ///< tensors read, of which packed 16-bit
    std::uint64_t bytes = 0;              ///< bytes read from the files
    double seconds = 0;
    double mb_per_s() const { return seconds > 0 ? double(bytes) / 1e6 / seconds : 0; }
};

/// Peak resident set size of this process in bytes (getrusage ru_maxrss).
inline std::uint64_t peak_rss_bytes() {
    struct rusage ru {};
    ::getrusage(RUSAGE_SELF, &ru);
    return std::uint64_t(ru.ru_maxrss) * 1024;
}

namespace detail {

inline std::string shape_text(const std::vector<index_t>& s) { return aligngpt::detail::shape_str(s); }

/// Progress lines on the log stream, at most every 0.5 s, plus a summary.
class progress {
public:
    progress(const load_options& o, std::string what, std::size_t total_tensors, std::uint64_t total_bytes)
        : out_(o.quiet ? nullptr : (o.log ? o.log : &std::cerr)),
          what_(std::move(what)),
          nt_(total_tensors),
          nb_(total_bytes),
          t0_(clock::now()),
          last_(t0_) {}
    void step(std::uint64_t bytes) {
        done_t_++, done_b_ += bytes;
        if (!out_) return;
        const auto now = clock::now();
        if (std::chrono::duration<double>(now - last_).count() < 0.5) return;
        last_ = now;
        *out_ << "[load] " << what_ << ": " << done_t_ << "/" << nt_ << " tensors, " << mb(done_b_) << "/" << mb(nb_) << " MB, "
              << int(rate()) << " MB/s\n"
              << std::flush;
    }
    double seconds() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }
    double rate() const { return seconds() > 0 ? double(done_b_) / 1e6 / seconds() : 0; }
    void done(const std::string& extra = {}) {
        if (!out_) return;
        *out_ << "[load] " << what_ << ": " << done_t_ << " tensors, " << mb(done_b_) << " MB in " << fixed2(seconds()) << " s ("
              << int(rate()) << " MB/s)" << extra << "\n"
              << std::flush;
    }

private:
    using clock = std::chrono::steady_clock;
    static std::string mb(std::uint64_t b) { return fixed2(double(b) / 1e6); }
    static std::string fixed2(double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f", v);
        return buf;
    }
    std::ostream* out_;
    std::string what_;
    std::size_t nt_, done_t_ = 0;
    std::uint64_t nb_, done_b_ = 0;
    clock::time_point t0_, last_;
};

/// Visitor collecting a module's parameters, each linear's weight with its layer (for packing).
template <class T, class Backend>
struct param_slot {
    autograd::variable<T, Backend> var;
    nn::linear<T, Backend>* linear = nullptr;  ///< set when the parameter is that linear's weight
};
template <class T, class Backend>
struct collect_params {
    using visits_linears = void;  // nn::linear::visit calls f(linear&) for visitors with this tag
    std::vector<param_slot<T, Backend>>* out;
    void operator()(autograd::variable<T, Backend>& v) const { out->push_back({v, nullptr}); }
    void operator()(nn::linear<T, Backend>& l) const {
        out->push_back({l.weight, &l});
        if (l.bias.defined()) out->push_back({l.bias, nullptr});
    }
};

}  // namespace detail

/// Parameters read and checked but not yet in the module: commit() swaps them in (no throw).
template <class T = float, class Backend = backend::cpu>
class staged_load {
public:
    /// Reads every parameter of `module` from `src` into fresh storage. Problems are collected
    /// (see errors()); nothing in the module changes until commit().
    template <class M>
    void stage(M& module, const tensor_source& src, const load_options& opt, const std::string& what) {
        std::vector<detail::param_slot<T, Backend>> params;
        module.visit(detail::collect_params<T, Backend>{&params});

        struct job {
            detail::param_slot<T, Backend> slot;
            std::string key;
            const tensor_source::entry* e;
            bool pack;
        };
        std::vector<job> jobs;
        std::map<std::string, bool, std::less<>> used;
        std::uint64_t total = 0;
        const std::string where = what + " (" + src.description() + ")";
        for (auto& p : params) {
            const std::string& name = p.var.name();
            std::string key = name;
            for (const auto& [mp, sp] : opt.rename)
                if (name.starts_with(mp)) {
                    key = sp + name.substr(mp.size());
                    break;
                }
            const tensor_source::entry* e = src.find(key);
            const bool in_scope = opt.scope.empty() || std::any_of(opt.scope.begin(), opt.scope.end(),
                                                                   [&](const std::string& s) { return key.starts_with(s); });
            if (!e || !in_scope) {
                const bool may = std::any_of(opt.allow_missing.begin(), opt.allow_missing.end(),
                                             [&](const std::string& g) { return glob_match(g, name); });
                if (!may)
                    missing_.push_back(aligngpt::io::detail::quote_name(name) + " " + detail::shape_text(p.var.shape()) +
                                       (key != name ? " (source key " + aligngpt::io::detail::quote_name(key) + ")" : "") +
                                       " in " + where);
                continue;
            }
            used[key] = true;
            const tensor_info& t = *e->info;
            const std::string at = aligngpt::io::detail::quote_name(key) + " in " + e->file->basename();
            if (t.shape != p.var.shape()) {
                bad_shape_.push_back(at + ": " + detail::shape_text(t.shape) + ", expected " + detail::shape_text(p.var.shape()) +
                                     (key != name ? " (parameter " + name + ")" : ""));
                continue;
            }
            if (t.type != dtype::F32 && t.type != dtype::BF16 && t.type != dtype::F16) {
                bad_dtype_.push_back(at + ": " + dtype_name(t.type) + ", expected F32, BF16 or F16 (exact in f32)");
                continue;
            }
            bool pack = false;
            if (opt.dtype != weights_dtype::f32 && p.var.value().dim() == 2 &&
                (opt.pack_if ? opt.pack_if(name) : p.linear != nullptr)) {
                const dtype want = opt.dtype == weights_dtype::bf16 ? dtype::BF16 : dtype::F16;
                pack = t.type == want;
                if (!pack)
                    notes_.push_back(name + ": file holds " + dtype_name(t.type) + ", kept in f32 (weights_dtype " +
                                     weights_dtype_name(opt.dtype) + " packs only " + dtype_name(want) + " exactly)");
            }
            jobs.push_back({p, key, e, pack});
            total += t.nbytes();
        }
        for (const auto& kv : src.entries()) {
            const std::string& k = kv.first;  // (not a structured binding: lambdas below capture it)
            const tensor_source::entry& e = kv.second;
            if (used.count(k)) continue;
            if (!opt.scope.empty() &&
                std::none_of(opt.scope.begin(), opt.scope.end(), [&](const std::string& s) { return k.starts_with(s); }))
                continue;
            if (std::any_of(opt.ignore.begin(), opt.ignore.end(), [&](const std::string& g) { return glob_match(g, k); }))
                continue;
            unexpected_.push_back(aligngpt::io::detail::quote_name(k) + " " + detail::shape_text(e.info->shape) + " " +
                                  dtype_name(e.info->type) + " in " + e.file->basename() + " (" + where + ")");
        }
        if (!ok()) return;  // report before reading gigabytes

        // Read in file order (sequential I/O), each file's tensors by offset.
        std::sort(jobs.begin(), jobs.end(), [](const job& a, const job& b) {
            return a.e->file->path() != b.e->file->path() ? a.e->file->path() < b.e->file->path()
                                                          : a.e->info->begin < b.e->info->begin;
        });
        detail::progress prog(opt, what, jobs.size(), total);
        std::size_t n_packed = 0;
        for (const job& j : jobs) {
            const tensor_info& t = *j.e->info;
            try {
                if (j.pack) {
                    stage_packed(j.slot, t, *j.e->file, opt);
                    n_packed++;
                } else {
                    values_.push_back({j.slot.var, staged(t.shape, j.slot.var.backend(), [&](T* dst) {
                                           if constexpr (std::is_same_v<T, float>)
                                               j.e->file->read(t, dst);
                                           else {
                                               std::vector<float> tmp(std::size_t(t.numel()));
                                               j.e->file->read(t, tmp.data());
                                               std::copy(tmp.begin(), tmp.end(), dst);
                                           }
                                       })});
                }
            } catch (const std::exception& ex) { read_errors_.push_back(ex.what()); }
            j.e->file->release(t);
            stats_.bytes += t.nbytes();
            stats_.tensors++;
            prog.step(t.nbytes());
        }
        stats_.packed += n_packed;
        stats_.seconds += prog.seconds();
        prog.done(n_packed ? ", " + std::to_string(n_packed) + " packed " + weights_dtype_name(opt.dtype) : std::string());
        if (!opt.quiet && !notes_.empty()) {
            std::ostream& o = opt.log ? *opt.log : std::cerr;
            o << "[load] note: " << notes_.size() << " weights kept in f32, e.g. " << notes_.front() << "\n";
        }
    }

    bool ok() const {
        return missing_.empty() && unexpected_.empty() && bad_shape_.empty() && bad_dtype_.empty() && read_errors_.empty();
    }
    /// One message listing every problem by name (empty if none).
    std::string errors(const std::string& title) const {
        if (ok()) return {};
        std::ostringstream o;
        const std::size_t n = missing_.size() + unexpected_.size() + bad_shape_.size() + bad_dtype_.size() + read_errors_.size();
        o << title << ": " << n << " problem" << (n == 1 ? "" : "s") << ", nothing was loaded";
        const auto list = [&](const char* head, const std::vector<std::string>& v) {
            if (v.empty()) return;
            o << "\n  " << head << " (" << v.size() << "):";
            for (std::size_t i = 0; i < v.size() && i < 40; i++) o << "\n    " << v[i];
            if (v.size() > 40) o << "\n    ... and " << v.size() - 40 << " more";
        };
        list("missing", missing_);
        list("unexpected", unexpected_);
        list("wrong shape", bad_shape_);
        list("wrong dtype", bad_dtype_);
        list("unreadable", read_errors_);
        return o.str();
    }
    /// Swaps every staged value into its parameter. Only call when ok().
    void commit() {
        for (auto& [var, v] : values_) var.value() = std::move(v);
        for (auto& [lin, pw] : packed_bf16_) lin->packed_bf16 = pw;
        for (auto& [lin, pw] : packed_f16_) lin->packed_f16 = pw;
        values_.clear(), packed_bf16_.clear(), packed_f16_.clear();
    }
    packed_store& packed() { return packed_; }
    const load_stats& stats() const { return stats_; }
    const std::vector<std::string>& notes() const { return notes_; }

private:
    /// A loaded value on the parameter's backend: read straight into its memory when the host can
    /// write it (backend::cpu: no extra copy of a 7B model), else into a host buffer copied over once.
    template <class Fill>
    static tensor<T, Backend> staged(const shape_t& shape, const Backend& be, Fill&& fill) {
        tensor<T, Backend> v(shape, be);
        if constexpr (Backend::host_accessible) {
            fill(v.data());
        } else {
            std::vector<T> host(static_cast<std::size_t>(v.numel()));
            fill(host.data());
            be.from_host(v.data(), host.data(), v.numel());
        }
        return v;
    }
    template <class S>
    void stage_packed(const detail::param_slot<T, Backend>& slot, const tensor_info& t, const raw_weights& f,
                      const load_options& opt) {
        const index_t N = t.shape[0], K = t.shape[1];
        const std::byte* p = f.data(t);
        std::shared_ptr<const ops::packed_weight<S>> pw;
        if (f.contiguous(t) && reinterpret_cast<std::uintptr_t>(p) % alignof(S) == 0) {
            // straight from the mapped file into the panels
            pw = std::make_shared<const ops::packed_weight<S>>(ops::packed_weight<S>::pack(reinterpret_cast<const S*>(p), N, K));
        } else {
            std::vector<S> tmp(std::size_t(t.numel()));
            f.read(t, tmp.data());
            pw = std::make_shared<const ops::packed_weight<S>>(ops::packed_weight<S>::pack(tmp.data(), N, K));
        }
        const std::string& name = slot.var.name();
        if constexpr (std::is_same_v<S, bf16>)
            packed_.bf16_weights[name] = pw;
        else
            packed_.f16_weights[name] = pw;
        if (slot.linear) {
            if constexpr (std::is_same_v<S, bf16>)
                packed_bf16_.push_back({slot.linear, pw});
            else
                packed_f16_.push_back({slot.linear, pw});
        } else if (!opt.packed_store_only) {
            // a bare matrix has no packed slot: give it the exact f32 widening as well
            values_.push_back({slot.var, staged(t.shape, slot.var.backend(), [&](T* dst) {
                                   std::vector<float> row(static_cast<std::size_t>(K));
                                   for (index_t j = 0; j < N; j++) {
                                       pw->unpack_row(j, row.data());
                                       std::copy(row.begin(), row.end(), dst + j * K);
                                   }
                               })});
        }
    }
    void stage_packed(const detail::param_slot<T, Backend>& slot, const tensor_info& t, const raw_weights& f,
                      const load_options& opt) {
        if (opt.dtype == weights_dtype::bf16)
            stage_packed<bf16>(slot, t, f, opt);
        else
            stage_packed<f16>(slot, t, f, opt);
    }
    std::vector<std::pair<autograd::variable<T, Backend>, tensor<T, Backend>>> values_;
    std::vector<std::pair<nn::linear<T, Backend>*, std::shared_ptr<const ops::packed_weight<bf16>>>> packed_bf16_;
    std::vector<std::pair<nn::linear<T, Backend>*, std::shared_ptr<const ops::packed_weight<f16>>>> packed_f16_;
    packed_store packed_;
    load_stats stats_;
    std::vector<std::string> missing_, unexpected_, bad_shape_, bad_dtype_, read_errors_, notes_;
};

struct load_result {
    load_stats stats;
    packed_store packed;
};

/// Loads every parameter of `module` from `src`, all or nothing; throws one error listing every
/// problem by name. Returns the statistics (and, with bf16/f16, the packed weights).
template <class T = float, class Backend = backend::cpu, class M>
load_result load_parameters(M& module, const tensor_source& src, const load_options& opt = {},
                            const std::string& what = "model") {
    staged_load<T, Backend> s;
    s.stage(module, src, opt, what);
    if (!s.ok()) fail(s.errors("load_parameters: " + what + " from " + src.description()));
    s.commit();
    return {s.stats(), std::move(s.packed())};
}

}  // namespace aligngpt::io
