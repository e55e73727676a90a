#pragma once
// JSON files and their fields: the one reader behind every config parser (config.json of LLaMA,
// AlignGPT and CLIP, preprocessor_config.json) and the checkpoint index (*.index.json), so bad
// input is refused with one message shape, naming the file and the field:
//
//   config.json: field 'hidden_size' must be an integer in [1, 65536], got "abc"
//   config.json: field 'vision_config.patch_size' must be an integer in [1, 16384], got null
//   config.json: field 'mm_hidden_size' must be an integer in [1, 65536], but it is missing
//
//   const nlohmann::json j = io::read_json_file(dir + "/config.json");
//   io::json_reader r(j, dir + "/config.json");              // null counts as absent
//   index_t h = r.integer("hidden_size", std::nullopt, 1, 1 << 16);   // required
//   double eps = r.number("rms_norm_eps", 1e-6, 0, 1, /*lo_open=*/true);
//   io::json_reader v = r.object("vision_config");             // fields read as 'vision_config.x'
//
// Whether a null value means "use the default" is chosen per reader (json_nulls): transformers'
// configs write null for some defaults, and the existing parsers refuse null elsewhere.
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"

namespace aligngpt::io {

struct json_parse_options {
    std::uint64_t max_bytes = std::uint64_t(16) << 20;  ///< checked before the file is read
    /// nlohmann (like Python's json) keeps the last of two equal keys silently; an index that maps
    /// a tensor twice must be refused instead.
    bool refuse_duplicate_keys = false;
    /// Objects and arrays nested deeper are refused before any value is built: nlohmann's dump(),
    /// copy and comparison recurse, so a deep file would overflow the stack later. Configs need 3.
    std::size_t max_depth = 64;
};

namespace detail {

/// Checks duplicate keys and nesting depth without building anything.
class json_shape_check : public nlohmann::json_sax<nlohmann::json> {
public:
    using json = nlohmann::json;
    explicit json_shape_check(const json_parse_options& o) : opt_(o) {}
    std::string error;

    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(json::number_integer_t) override { return true; }
    bool number_unsigned(json::number_unsigned_t) override { return true; }
    bool number_float(json::number_float_t, const json::string_t&) override { return true; }
    bool string(json::string_t&) override { return true; }
    bool binary(json::binary_t&) override { return true; }
    bool start_object(std::size_t) override { return push(); }
    bool start_array(std::size_t) override { return push(); }
    bool end_object() override { return pop(); }
    bool end_array() override { return pop(); }
    bool key(json::string_t& k) override {
        if (opt_.refuse_duplicate_keys && !keys_.back().insert(k).second)
            return bad("duplicate key " + quote_name(k) + " (each key may appear once)");
        if (path_.size() < keys_.size()) path_.resize(keys_.size());
        path_[keys_.size() - 1] = k;
        return true;
    }
    bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
        return bad("invalid JSON at byte " + std::to_string(pos) + ": " + ex.what());
    }

private:
    bool push() {
        if (opt_.max_depth && keys_.size() >= opt_.max_depth) {
            std::string field;  // the keys leading there, cut: the path itself may be huge
            for (std::size_t d = 0; d < keys_.size() && d < path_.size() && d < 4; d++)
                if (!path_[d].empty()) field += (field.empty() ? "" : ".") + path_[d].substr(0, 64);
            return bad("nesting deeper than " + std::to_string(opt_.max_depth) + " levels" +
                       (field.empty() ? std::string() : " (in field '" + field + "')"));
        }
        keys_.emplace_back();
        if (path_.size() >= keys_.size()) path_[keys_.size() - 1].clear();
        return true;
    }
    bool pop() {
        keys_.pop_back();
        return true;
    }
    bool bad(std::string m) {
        if (error.empty()) error = std::move(m);
        return false;
    }
    const json_parse_options& opt_;
    std::vector<std::unordered_set<std::string>> keys_;  // per open level: the keys seen
    std::vector<std::string> path_;                      // per open level: the current key
};

/// A string quoted as JSON, cut to `max` bytes before quoting (a cut UTF-8 sequence shows as U+FFFD).
inline std::string json_quoted(const std::string& s, std::size_t max) {
    return nlohmann::json(s.size() > max ? s.substr(0, max) : s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

inline void json_text_to(const nlohmann::json& v, std::string& out, std::size_t max, int depth) {
    if (v.is_string()) {
        out += json_quoted(v.get_ref<const std::string&>(), max);
        return;
    }
    if (!v.is_structured()) {
        out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        return;
    }
    const bool obj = v.is_object();
    if (depth >= 4) {  // never recurse far: the value may be nested without bound
        out += obj ? "{...}" : "[...]";
        return;
    }
    out += obj ? '{' : '[';
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (out.size() > max) return;  // the caller cuts and marks the end
        if (it != v.begin()) out += ',';
        if (obj) out += json_quoted(it.key(), max) + ':';
        json_text_to(*it, out, max, depth + 1);
    }
    out += obj ? '}' : ']';
}

/// A JSON value for an error message: compact, cut to `max` bytes, at most 4 levels shown.
inline std::string json_text(const nlohmann::json& v, std::size_t max = 80) {
    std::string s;
    json_text_to(v, s, max, 0);
    if (s.size() > max) s = s.substr(0, max) + "...";
    return s;
}

/// The value as a 64-bit integer, or nullopt when it is not a JSON integer or does not fit:
/// nlohmann keeps 2^63..2^64-1 as unsigned, which get<int64_t>() would silently wrap.
inline std::optional<std::int64_t> json_int64(const nlohmann::json& v) {
    if (v.is_number_unsigned()) {
        const std::uint64_t u = v.get<std::uint64_t>();
        if (u > std::uint64_t(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
        return std::int64_t(u);
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    return std::nullopt;
}

}  // namespace detail

/// Parses `text`; errors read "FILE: invalid JSON: ...".
inline nlohmann::json parse_json(std::string_view text, const std::string& file, const json_parse_options& opt = {}) {
    if (opt.refuse_duplicate_keys || opt.max_depth) {
        detail::json_shape_check check(opt);
        bool ok = false;
        try {
            ok = nlohmann::json::sax_parse(text, &check);
        } catch (const std::exception& e) { fail(file, ": invalid JSON: ", e.what()); }
        ALIGNGPT_CHECK(ok && check.error.empty(), file, ": ", check.error.empty() ? std::string("invalid JSON") : check.error);
    }
    try {
        return nlohmann::json::parse(text);
    } catch (const std::exception& e) { fail(file, ": invalid JSON: ", e.what()); }
}

/// Reads and parses a JSON file (size checked first); errors name the path.
inline nlohmann::json read_json_file(const std::string& path, const json_parse_options& opt = {}) {
    return parse_json(read_text_file(path, opt.max_bytes), path, opt);
}

/// Whether a null value reads as an absent key (the default applies) or is refused.
enum class json_nulls { absent, refused };

/// Reads the fields of one JSON object. Every error reads "FILE: field 'NAME' must ...".
class json_reader {
public:
    static constexpr std::int64_t no_limit = std::numeric_limits<std::int64_t>::max();
    static constexpr double any = std::numeric_limits<double>::max();  ///< number(): no upper bound

    json_reader(const nlohmann::json& j, std::string file, json_nulls nulls = json_nulls::absent)
        : j_(&j), file_(std::move(file)), nulls_(nulls) {
        ALIGNGPT_CHECK(j.is_object(), file_, ": top level must be a JSON object, got ", detail::json_text(j));
    }

    const std::string& file() const { return file_; }
    const nlohmann::json& json() const { return *j_; }
    /// The field's name in messages: "section.key".
    std::string name(std::string_view key) const { return prefix_ + std::string(key); }
    /// The same object read with another null policy.
    json_reader nulls(json_nulls n) const {
        json_reader r = *this;
        r.nulls_ = n;
        return r;
    }

    /// The value, or nullptr when the key is absent (or null, with json_nulls::absent).
    const nlohmann::json* get(std::string_view key) const {
        const auto it = j_->find(key);
        if (it == j_->end() || (it->is_null() && nulls_ == json_nulls::absent)) return nullptr;
        return &*it;
    }
    bool has(std::string_view key) const { return get(key) != nullptr; }

    /// "FILE: field 'NAME' " + the rest.
    template <class... A>
    [[noreturn]] void fail(std::string_view key, A&&... rest) const {
        aligngpt::fail(file_, ": field '", name(key), "' ", std::forward<A>(rest)...);
    }
    /// "FILE: field 'NAME' must be WHAT, got VALUE" (or "but it is missing").
    [[noreturn]] void must_be(std::string_view key, const std::string& what) const {
        const auto it = j_->find(key);
        if (it == j_->end()) fail(key, "must be ", what, ", but it is missing");
        fail(key, "must be ", what, ", got ", detail::json_text(*it));
    }

    std::int64_t integer(std::string_view key, std::optional<std::int64_t> def, std::int64_t lo, std::int64_t hi) const {
        const nlohmann::json* v = get(key);
        if (!v) {
            if (!def) must_be(key, int_range(lo, hi));
            return *def;
        }
        const std::optional<std::int64_t> x = detail::json_int64(*v);
        if (!x || *x < lo || *x > hi) must_be(key, int_range(lo, hi));
        return *x;
    }
    /// A finite number in [lo, hi] (lo excluded when lo_open).
    double number(std::string_view key, std::optional<double> def, double lo, double hi, bool lo_open = false) const {
        const nlohmann::json* v = get(key);
        const auto what = [&] {
            std::ostringstream o;
            o.precision(15);  // 1000000, not 1e+06
            if (hi == any && lo == -any)
                o << "a finite number";
            else if (hi == any)
                o << "a finite number " << (lo_open ? "> " : ">= ") << lo;
            else
                o << "a number in " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
            return o.str();
        };
        if (!v) {
            if (!def) must_be(key, what());
            return *def;
        }
        if (!v->is_number()) must_be(key, what());
        const double x = v->get<double>();
        if (!std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) must_be(key, what());
        return x;
    }
    std::string string(std::string_view key, std::optional<std::string> def) const {
        const nlohmann::json* v = get(key);
        if (!v) {
            if (!def) must_be(key, "a string");
            return *def;
        }
        if (!v->is_string()) must_be(key, "a string");
        return v->get<std::string>();
    }
    bool boolean(std::string_view key, std::optional<bool> def) const {
        const nlohmann::json* v = get(key);
        if (!v) {
            if (!def) must_be(key, "true or false");
            return *def;
        }
        if (!v->is_boolean()) must_be(key, "true or false");
        return v->get<bool>();
    }
    /// A string among `allowed` (the message lists them).
    std::string one_of(std::string_view key, std::optional<std::string> def, std::initializer_list<std::string_view> allowed,
                       std::string_view why = {}) const {
        std::string what;
        for (std::string_view a : allowed) what += (what.empty() ? "" : " or ") + std::string("\"") + std::string(a) + "\"";
        if (!why.empty()) what += " (" + std::string(why) + ")";
        const nlohmann::json* v = get(key);
        if (!v) {
            if (!def) must_be(key, what);
            return *def;
        }
        if (v->is_string())
            for (std::string_view a : allowed)
                if (v->get<std::string>() == a) return std::string(a);
        must_be(key, what);
    }
    /// The sub-object `key`, whose fields are named "key.field".
    json_reader object(std::string_view key) const {
        const nlohmann::json* v = get(key);
        if (!v || !v->is_object()) must_be(key, "an object");
        json_reader r = *this;
        r.j_ = v;
        r.prefix_ = name(key) + ".";
        return r;
    }
    static std::string int_range(std::int64_t lo, std::int64_t hi) {
        if (hi == no_limit) return "an integer >= " + std::to_string(lo);
        return "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
    }

private:
    const nlohmann::json* j_;
    std::string file_, prefix_;
    json_nulls nulls_;
};

}  // namespace aligngpt::io
