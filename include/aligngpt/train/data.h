#pragma once
// The training data pipeline of the reference (AlignGPT src/utils/dataset.py: LazySupervisedDataset,
// preprocess_multimodal, preprocess_plain, preprocess_v1, DataCollatorForSupervisedDataset;
// src/train/aligngpt_trainer.py: get_modality_length_grouped_indices). docs/training.md;
// docs/model.md §7.3 (labels), §9 (training).
//
//   auto tok = tokenizer::llama_tokenizer::from_directory(model_dir);
//   train::dataset ds("llava_v1_5_mix665k.json", "data/images", tok, "vicuna_v1", io::aspect_mode::pad,
//                     io::clip_image_processor_config::from_json_file(pp), /*model_max_length=*/2048);
//   auto order = train::modality_grouped_order(ds.grouping_lengths(), /*batch=*/16, /*world=*/8, seed, epoch);
//   train::example ex = ds.get(order[k]);   // ex.sample: ids/labels for models::prepare_batch
//
// Data file: a JSON array of records {"id", "image" (optional, relative to the image folder),
// "conversations": [{"from": "human"|"gpt", "value": str}, ...], "similarity" (optional level)};
// other fields are ignored. The file is never parsed whole (the real ones are hundreds of MB):
// record_index scans it once in 1 MiB chunks with a small scanner (strings, escapes, nesting) that
// finds each record's byte range; each record is then checked by nlohmann's SAX parser (no DOM) for
// what the sampler needs (has an image, word count, level). get(i) reads and parses one record.
// Errors name the file, the record (0-based) and its byte offset, and the field:
//   data.json: record 17 (byte 5123): "conversations"[2]."from": expected "human" or "gpt", got "bot"
//
// Per record, exactly as the reference (ids and labels checked against it, tests/test_train_data.cpp):
//   * image records: "<image>" anywhere in a message moves to the front: "<image>\n" + rest.strip();
//   * plain (stage 1): "<image>" + answer + "\n" (the human text is dropped), tokenizer_image_token;
//     the first len(tokenizer_image_token("<image>")) = 2 labels ignored; no EOS;
//   * vicuna_v1 (stage 2): the template's prompt; a leading non-human turn is skipped, then turns
//     must alternate human/gpt; image records via tokenizer_image_token, text-only ones via the
//     tokenizer cut at model_max_length; preprocess_v1's length arithmetic masks the prompt parts;
//     when its count disagrees with the ids (and is < model_max_length) the whole sample is ignored
//     and example::mismatch is set (the reference prints "WARNING: tokenization mismatch");
//   * the collator: ids/labels cut to model_max_length; attention_mask = ids != pad (pad = unk = 0)
//     and the model keeps only unmasked tokens (prepare_inputs_labels_for_multimodal indexes
//     ids[attention_mask]), so ANY id-0 token is dropped here together with its label. The result
//     is what models::prepare_batch expects (it pads, splices the image, cuts to max_length - 1).
//   * pixels: io::clip_preprocess with the dataset's aspect mode (stage 1 square, stage 2 pad);
//     text-only records have none (the reference's zero image is never looked at by our model).
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/conversation.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/image.h"
#include "aligngpt/io/json.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/rng.h"
#include "aligngpt/tensor.h"
#include "aligngpt/tokenizer/llama.h"

namespace aligngpt::train {

// ---------------------------------------------------------------------------------------------
// Records: one scan builds the index, a record is parsed when fetched

struct data_limits {
    std::uint64_t max_record_bytes = std::uint64_t(64) << 20;  ///< one record (LLaVA's are < 64 KiB)
    /// Nesting below a record (the record object is level 1). A record needs 3; the scanner counts
    /// without recursion, and the bound keeps nlohmann's recursive copy/dump safe later.
    std::size_t max_depth = 64;
    std::uint64_t max_records = std::uint64_t(1) << 32;
};

/// What the index knows of a record without parsing it into a DOM.
struct record_entry {
    std::uint64_t offset = 0, length = 0;  ///< byte range of the record's object in the file
    bool has_image = false;                ///< the key "image" is present (the reference's `'image' in sample`)
    std::int64_t words = 0;                ///< sum over turns of len(value.split())
    std::optional<std::int64_t> level;     ///< "similarity" when it is an integer
    bool has_similarity = false;           ///< the key is present (whatever its value)
};

namespace detail {

/// Python's len(s.split()): runs of non-whitespace code points (s is valid UTF-8).
inline std::int64_t python_word_count(std::string_view s) {
    std::int64_t n = 0;
    bool in_word = false;
    for (std::size_t i = 0; i < s.size();) {
        const auto [c, len] = tokenizer::detail::utf8_at(s, i);
        i += len;
        const bool space = tokenizer::is_python_space(c);
        if (!space && !in_word) n++;
        in_word = !space;
    }
    return n;
}

/// SAX over one record: the keys at level 1 ("image", "similarity", "conversations") and the
/// strings at "conversations"[*]."value". Nesting is bounded by the scanner before this runs.
struct record_sax : nlohmann::json_sax<nlohmann::json> {
    using json = nlohmann::json;
    record_entry* e = nullptr;
    std::vector<char> stack;  // 'o' / 'a' per open container
    std::string key1, key3;   // the last key at level 1 and at level 3
    std::string error;

    bool at_value() const {
        return stack.size() == 3 && stack[1] == 'a' && stack[2] == 'o' && key1 == "conversations" && key3 == "value";
    }
    bool at_level() const { return stack.size() == 1 && key1 == "similarity"; }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(json::number_integer_t v) override {
        if (at_level()) e->level = v;
        return true;
    }
    bool number_unsigned(json::number_unsigned_t v) override {
        if (at_level() && v <= std::uint64_t(std::numeric_limits<std::int64_t>::max())) e->level = std::int64_t(v);
        return true;
    }
    bool number_float(json::number_float_t, const json::string_t&) override { return true; }
    bool string(json::string_t& s) override {
        if (at_value()) e->words += python_word_count(s);
        return true;
    }
    bool binary(json::binary_t&) override { return true; }
    bool start_object(std::size_t) override { return stack.push_back('o'), true; }
    bool end_object() override { return stack.pop_back(), true; }
    bool start_array(std::size_t) override { return stack.push_back('a'), true; }
    bool end_array() override { return stack.pop_back(), true; }
    bool key(json::string_t& k) override {
        if (stack.size() == 1) {
            key1 = k;
            if (k == "image") e->has_image = true;
            if (k == "similarity") e->has_similarity = true, e->level.reset();
        }
        if (stack.size() == 3) key3 = k;
        return true;
    }
    bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
        error = "invalid JSON at byte " + std::to_string(pos) + " of the record: " + ex.what();
        return false;
    }
};

inline std::string printable(char c) { return io::detail::quote_name(std::string_view(&c, 1)); }

}  // namespace detail

/// The byte ranges of the records of a JSON array file, found in one chunked pass, and the
/// records read back one at a time (pread on a descriptor kept open: fetching is thread-safe).
class record_index {
public:
    static record_index scan(const std::string& path, const data_limits& limits = {}) {
        record_index ix;
        ix.path_ = path;
        ix.fd_ = std::make_shared<io::detail::fd_closer>();
        io::detail::open_regular(path, *ix.fd_);
        ix.scan_all(limits);
        return ix;
    }

    std::size_t size() const { return entries_.size(); }
    const record_entry& entry(std::size_t i) const {
        ALIGNGPT_CHECK(i < entries_.size(), path_, ": record ", i, " requested, the file has ", entries_.size());
        return entries_[i];
    }
    const std::string& path() const { return path_; }
    /// "FILE: record I (byte B)": the prefix of every message about record i.
    std::string where(std::size_t i) const {
        return path_ + ": record " + std::to_string(i) + " (byte " + std::to_string(entry(i).offset) + ")";
    }
    /// The record's bytes as they are in the file.
    std::string raw(std::size_t i) const {
        const record_entry& e = entry(i);
        std::string out(std::size_t(e.length), '\0');
        std::size_t got = 0;
        while (got < out.size()) {
            const ssize_t r = ::pread(fd_->fd, out.data() + got, out.size() - got, off_t(e.offset + got));
            if (r < 0 && errno == EINTR) continue;
            ALIGNGPT_CHECK(r > 0, where(i), ": read failed after ", got, " of ", e.length,
                           " bytes: ", r == 0 ? std::string("the file became shorter") : io::detail::errno_text(errno));
            got += std::size_t(r);
        }
        return out;
    }
    /// The record as a DOM (its nesting was bounded by the scan).
    nlohmann::json parse(std::size_t i) const {
        try {
            return nlohmann::json::parse(raw(i));
        } catch (const nlohmann::json::exception& e) { fail(where(i), ": invalid JSON: ", e.what()); }
    }

private:
    std::string path_;
    std::shared_ptr<io::detail::fd_closer> fd_;
    std::vector<record_entry> entries_;

    static bool ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

    // The scanner's states between records; inside a record it tracks depth, string and escape.
    enum class state { before_array, first_or_end, value, comma_or_end, after_array };

    void scan_all(const data_limits& lim) {
        const auto here = [&](std::uint64_t pos) { return path_ + ": byte " + std::to_string(pos); };
        std::vector<char> buf(std::size_t(1) << 20);
        state st = state::before_array;
        std::string rec;          // the current record's bytes (bounded by max_record_bytes)
        std::uint64_t start = 0;  // its offset
        std::size_t depth = 0;    // 0: between records
        bool in_string = false, escape = false;
        std::uint64_t pos = 0;
        for (;;) {
            const ssize_t r = ::read(fd_->fd, buf.data(), buf.size());
            if (r < 0 && errno == EINTR) continue;
            ALIGNGPT_CHECK(r >= 0, path_, ": read failed at byte ", pos, ": ", io::detail::errno_text(errno));
            if (r == 0) break;
            std::size_t k = 0;
            const std::size_t n = std::size_t(r);
            while (k < n) {
                if (depth > 0) {  // inside a record: copy a run of bytes, watching the structure
                    const std::size_t from = k;
                    for (; k < n && depth > 0; k++) {
                        const char c = buf[k];
                        if (in_string) {
                            if (escape)
                                escape = false;
                            else if (c == '\\')
                                escape = true;
                            else if (c == '"')
                                in_string = false;
                        } else if (c == '"') {
                            in_string = true;
                        } else if (c == '{' || c == '[') {
                            ALIGNGPT_CHECK(++depth <= lim.max_depth, path_, ": record ", entries_.size(), " (byte ", start,
                                           "): nested deeper than ", lim.max_depth, " levels at byte ", pos + k);
                        } else if (c == '}' || c == ']') {
                            depth--;
                        }
                    }
                    ALIGNGPT_CHECK(rec.size() + (k - from) <= lim.max_record_bytes, path_, ": record ", entries_.size(),
                                   " (byte ", start, "): longer than the limit of ", lim.max_record_bytes, " bytes");
                    rec.append(buf.data() + from, k - from);
                    if (depth == 0) {
                        finish_record(rec, start, lim);
                        rec.clear();
                        st = state::comma_or_end;
                    }
                    continue;
                }
                const char c = buf[k];
                const std::uint64_t p = pos + k;
                k++;
                if (ws(c)) continue;
                switch (st) {
                    case state::before_array:
                        ALIGNGPT_CHECK(c == '[', here(p), ": the data must be a JSON array of records, got ",
                                       detail::printable(c));
                        st = state::first_or_end;
                        break;
                    case state::first_or_end:
                        if (c == ']') {
                            st = state::after_array;
                            break;
                        }
                        [[fallthrough]];
                    case state::value:
                        ALIGNGPT_CHECK(c == '{', path_, ": record ", entries_.size(), " (byte ", p,
                                       "): must be a JSON object, got ", detail::printable(c));
                        ALIGNGPT_CHECK(entries_.size() < lim.max_records, path_, ": more than ", lim.max_records, " records");
                        start = p, depth = 1, rec = "{";
                        break;
                    case state::comma_or_end:
                        ALIGNGPT_CHECK(c == ',' || c == ']', here(p), ": expected ',' or ']' after record ", entries_.size() - 1,
                                       ", got ", detail::printable(c));
                        st = c == ',' ? state::value : state::after_array;
                        break;
                    case state::after_array: fail(here(p), ": unexpected ", detail::printable(c), " after the end of the array");
                }
            }
            pos += n;
        }
        if (depth > 0)
            fail(path_, ": record ", entries_.size(), " (byte ", start, "): not closed at the end of the file (truncated?)");
        ALIGNGPT_CHECK(st == state::after_array, path_, ": the array is not closed at the end of the file (",
                       st == state::before_array ? "empty file" : "truncated?", ")");
    }

    void finish_record(const std::string& rec, std::uint64_t start, const data_limits&) {
        record_entry e;
        e.offset = start, e.length = rec.size();
        detail::record_sax sax;
        sax.e = &e;
        const bool ok = nlohmann::json::sax_parse(rec, &sax, nlohmann::json::input_format_t::json, /*strict=*/true);
        ALIGNGPT_CHECK(ok && sax.error.empty(), path_, ": record ", entries_.size(), " (byte ", start,
                       "): ", sax.error.empty() ? std::string("invalid JSON") : sax.error);
        entries_.push_back(e);
    }
};

// ---------------------------------------------------------------------------------------------
// One record, checked

struct turn {
    bool human = false;  ///< "from": "human" (true) or "gpt"
    std::string value;
};

struct record {
    std::string id;                    ///< "id" as text ("" when absent)
    std::optional<std::string> image;  ///< relative path
    std::vector<turn> turns;
    std::optional<std::int64_t> similarity;
};

/// Checks the fields the pipeline reads; `where` prefixes every message.
inline record check_record(const nlohmann::json& j, const std::string& where) {
    const auto bad = [&](const std::string& field, const std::string& what, const nlohmann::json* got) {
        if (got) fail(where, ": ", field, ": expected ", what, ", got ", io::detail::json_text(*got));
        fail(where, ": ", field, ": expected ", what, ", but it is missing");
    };
    if (!j.is_object()) bad("the record", "an object", &j);
    record r;
    if (const auto it = j.find("id"); it != j.end()) r.id = it->is_string() ? it->get<std::string>() : io::detail::json_text(*it);
    if (const auto it = j.find("image"); it != j.end()) {
        if (!it->is_string() || it->get_ref<const std::string&>().empty()) bad("\"image\"", "a relative path", &*it);
        r.image = it->get<std::string>();
    }
    if (const auto it = j.find("similarity"); it != j.end()) {
        const std::optional<std::int64_t> v = io::detail::json_int64(*it);
        if (!v) bad("\"similarity\"", "an integer level", &*it);
        r.similarity = v;
    }
    const auto it = j.find("conversations");
    if (it == j.end()) bad("\"conversations\"", "an array of turns", nullptr);
    if (!it->is_array() || it->empty()) bad("\"conversations\"", "a non-empty array of turns", &*it);
    for (std::size_t k = 0; k < it->size(); k++) {
        const nlohmann::json& t = (*it)[k];
        const std::string name = "\"conversations\"[" + std::to_string(k) + "]";
        if (!t.is_object()) bad(name, "an object {\"from\", \"value\"}", &t);
        const auto from = t.find("from");
        if (from == t.end()) bad(name + ".\"from\"", "\"human\" or \"gpt\"", nullptr);
        if (!from->is_string() || (*from != "human" && *from != "gpt")) bad(name + ".\"from\"", "\"human\" or \"gpt\"", &*from);
        const auto value = t.find("value");
        if (value == t.end() || !value->is_string()) bad(name + ".\"value\"", "a string", value == t.end() ? nullptr : &*value);
        r.turns.push_back({*from == "human", value->get<std::string>()});
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Tokenisation and label masking (preprocess_multimodal, preprocess_plain, preprocess_v1)

inline constexpr std::string_view image_tag = "<image>";

/// ids and labels of one sample before the collator, and whether preprocess_v1 gave up on it.
struct encoded {
    std::vector<std::int64_t> ids, labels;
    bool mismatch = false;
};

namespace detail {

/// Python's s.split(sep) for a non-empty sep: n separators give n + 1 parts.
inline std::vector<std::string> split_all(std::string_view s, std::string_view sep) {
    std::vector<std::string> out;
    for (std::size_t i = 0;;) {
        const std::size_t j = s.find(sep, i);
        if (j == std::string_view::npos) {
            out.emplace_back(s.substr(i));
            return out;
        }
        out.emplace_back(s.substr(i, j - i));
        i = j + sep.size();
    }
}

/// labels[lo:hi] = IGNORE with Python's slice clamping.
inline void ignore_range(std::vector<std::int64_t>& labels, std::int64_t lo, std::int64_t hi) {
    const std::int64_t n = std::int64_t(labels.size());
    lo = std::clamp<std::int64_t>(lo, 0, n), hi = std::clamp<std::int64_t>(hi, 0, n);
    for (std::int64_t t = lo; t < hi; t++) labels[std::size_t(t)] = models::ignore_index;
}

}  // namespace detail

/// preprocess_multimodal on one message of an image record: every "<image>" removed, the rest
/// stripped, "<image>\n" in front, the whole stripped again. Messages without the tag are kept.
inline std::string move_image_tag_to_front(const std::string& value) {
    if (value.find(image_tag) == std::string::npos) return value;
    return tokenizer::strip(std::string(image_tag) + "\n" +
                            tokenizer::strip(tokenizer::detail::replace_all(value, image_tag, "")));
}

/// preprocess_plain (stage 1): "<image>" + the answer + "\n"; the first
/// len(tokenizer_image_token("<image>")) labels ignored. `turns` must be [human, gpt].
inline encoded preprocess_plain(const tokenizer::llama_tokenizer& tok, const std::vector<turn>& turns) {
    ALIGNGPT_CHECK(turns.size() == 2, "preprocess_plain: ", turns.size(), " turns, the plain template takes 2");
    encoded e;
    e.ids = tokenizer::tokenizer_image_token(tok, std::string(image_tag) + turns[1].value + "\n");
    e.labels = e.ids;
    detail::ignore_range(e.labels, 0, std::int64_t(tokenizer::tokenizer_image_token(tok, image_tag).size()));
    return e;
}

/// The vicuna_v1 prompt of a conversation, as preprocess_v1 builds it: a leading non-human turn is
/// skipped; then turns must alternate human, gpt (an error names the turn, `where` prefixes it).
inline std::string v1_prompt(const std::vector<turn>& turns, const std::string& where = "conversation") {
    conversation::conversation c = conversation::make("vicuna_v1");
    const std::size_t first = !turns.empty() && !turns[0].human ? 1 : 0;
    for (std::size_t k = first; k < turns.size(); k++) {
        const bool want_human = (k - first) % 2 == 0;
        ALIGNGPT_CHECK(turns[k].human == want_human, where, ": \"conversations\"[", k, "].\"from\": expected \"",
                       want_human ? "human" : "gpt", "\" (turns alternate, starting with human), got \"",
                       turns[k].human ? "human" : "gpt", "\"");
        c.append(c.roles[want_human ? 0 : 1], turns[k].value);
    }
    return c.prompt();
}

/// preprocess_v1 (stage 2) on one prompt, with its length arithmetic:
///   total = ids that are not pad; rounds = prompt.split("</s>"); cur = 1 (BOS ignored);
///   per round (stop at an empty round or one that does not split in two on " ASSISTANT: "):
///     round_len = len(ids(round)); instr_len = len(ids(part0 + " ASSISTANT: ")) - 2;
///     ignore [cur, cur + instr_len); cur += round_len;
///   ignore [cur, end); if cur < model_max_length and cur != total: ignore everything (mismatch).
/// ids(x) is tokenizer_image_token for image records, else the tokenizer (whose output for the
/// whole prompt is cut at model_max_length; the rounds' are not).
inline encoded preprocess_v1(const tokenizer::llama_tokenizer& tok, const std::string& prompt, bool has_image,
                             std::int64_t model_max_length, std::int64_t pad_id) {
    const auto ids_of = [&](std::string_view s) { return has_image ? tokenizer::tokenizer_image_token(tok, s) : tok.encode(s); };
    encoded e;
    e.ids = ids_of(prompt);
    if (!has_image && std::int64_t(e.ids.size()) > model_max_length) e.ids.resize(std::size_t(model_max_length));
    e.labels = e.ids;
    const std::int64_t total =
        std::int64_t(std::count_if(e.ids.begin(), e.ids.end(), [&](std::int64_t t) { return t != pad_id; }));
    static constexpr std::string_view sep = " ASSISTANT: ";  // conv.sep + conv.roles[1] + ": "
    std::int64_t cur = 1;
    detail::ignore_range(e.labels, 0, cur);
    for (const std::string& round : detail::split_all(prompt, "</s>")) {
        if (round.empty()) break;
        const std::vector<std::string> parts = detail::split_all(round, sep);
        if (parts.size() != 2) break;
        const std::int64_t round_len = std::int64_t(ids_of(round).size());
        const std::int64_t instr_len = std::int64_t(ids_of(parts[0] + std::string(sep)).size()) - 2;
        detail::ignore_range(e.labels, cur, cur + instr_len);
        cur += round_len;
    }
    detail::ignore_range(e.labels, cur, std::int64_t(e.labels.size()));
    if (cur < model_max_length && cur != total) {
        std::fill(e.labels.begin(), e.labels.end(), models::ignore_index);
        e.mismatch = true;
    }
    return e;
}

/// What the collator and the model's attention mask leave of one sample: ids and labels cut to
/// model_max_length, then every position whose id is `pad_id` dropped with its label.
inline models::sample collated_sample(const encoded& e, std::int64_t model_max_length, std::int64_t pad_id,
                                      std::int64_t level = -1) {
    models::sample s;
    s.level = level;
    const std::size_t n = std::min(e.ids.size(), std::size_t(std::max<std::int64_t>(model_max_length, 0)));
    for (std::size_t t = 0; t < n; t++) {
        if (e.ids[t] == pad_id) continue;
        s.ids.push_back(e.ids[t]);
        s.labels.push_back(e.labels[t]);
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// The dataset

enum class data_template { plain, vicuna_v1 };

inline data_template parse_data_template(std::string_view name) {
    if (name == "plain") return data_template::plain;
    if (name == "vicuna_v1" || name == "v1") return data_template::vicuna_v1;
    fail("train data: unknown template ", io::detail::quote_name(name, 64), " (known: plain for stage 1, vicuna_v1 for stage 2)");
}

struct example {
    models::sample sample;  ///< ids / labels / level for models::prepare_batch
    tensor<float> pixels;   ///< [3, crop_h, crop_w]; undefined for a text-only record
    std::string id;
    bool mismatch = false;  ///< preprocess_v1's "tokenization mismatch": every label is ignored
};

struct dataset_options {
    data_limits limits{};
    std::int64_t n_levels = 8;  ///< alignment levels: stage 1 needs "similarity" in [0, n_levels); 0: none (LLaVA-1.5)
};

class dataset {
public:
    /// Scans `json_path` (the index is built here; records are parsed by get). Stage 1 (plain)
    /// checks here that every record has an image and a level. An empty array gives size() 0.
    dataset(std::string json_path, std::string image_folder, tokenizer::llama_tokenizer tok, std::string_view template_name,
            io::aspect_mode aspect, io::clip_image_processor_config image_config, std::int64_t model_max_length,
            dataset_options options = {})
        : folder_(std::move(image_folder)),
          tok_(std::move(tok)),
          template_(parse_data_template(template_name)),
          image_(image_config),
          max_length_(model_max_length),
          opt_(options),
          index_(record_index::scan(json_path, options.limits)) {
        ALIGNGPT_CHECK(max_length_ >= 2, "train data: model_max_length must be >= 2, got ", max_length_);
        ALIGNGPT_CHECK(opt_.n_levels >= 0, "train data: n_levels must be >= 0, got ", opt_.n_levels);
        image_.aspect = aspect;
        if (template_ == data_template::plain)
            for (std::size_t i = 0; i < index_.size(); i++) check_stage1(i, index_.entry(i));
    }

    std::size_t size() const { return index_.size(); }
    bool is_image(std::size_t i) const { return index_.entry(i).has_image; }
    /// The reference's modality_lengths[i]: the word count, negative for a text-only record.
    std::int64_t length(std::size_t i) const {
        const record_entry& e = index_.entry(i);
        return e.has_image ? e.words : -e.words;
    }
    std::vector<std::int64_t> lengths() const {
        std::vector<std::int64_t> out(size());
        for (std::size_t i = 0; i < size(); i++) out[i] = length(i);
        return out;
    }
    /// lengths() for modality_grouped_order, which refuses a zero length as the reference asserts:
    /// a record without words is refused here, where the file and the record can be named.
    std::vector<std::int64_t> grouping_lengths() const {
        std::vector<std::int64_t> out = lengths();
        for (std::size_t i = 0; i < out.size(); i++)
            ALIGNGPT_CHECK(out[i] != 0, index_.where(i),
                           ": \"conversations\": no words; grouping by modality length needs at least one (the reference "
                           "asserts it too)");
        return out;
    }
    const record_index& index() const { return index_; }
    data_template stage_template() const { return template_; }

    /// The record checked, without tokenising it.
    record read(std::size_t i) const { return check_record(index_.parse(i), index_.where(i)); }

    /// Record i up to the collator: checked, image tag moved, tokenised and masked (the reference's
    /// LazySupervisedDataset[i] without the image). `level` is "similarity" in stage 1, -1 in stage 2
    /// (the finetune stage takes its indicator from the gate, not from a level).
    struct prepared {
        record rec;
        encoded enc;
        std::int64_t level = -1;
    };
    prepared prepare(std::size_t i) const {
        const std::string where = index_.where(i);
        prepared p{read(i), {}, -1};
        record& r = p.rec;
        const bool image = r.image.has_value();
        std::vector<turn> turns = r.turns;
        if (image)
            for (turn& t : turns) t.value = move_image_tag_to_front(t.value);
        if (template_ == data_template::plain) {
            ALIGNGPT_CHECK(image, where, ": \"image\": stage 1 (plain) needs an image in every record");
            if (opt_.n_levels > 0)
                ALIGNGPT_CHECK(r.similarity && *r.similarity >= 0 && *r.similarity < opt_.n_levels, where,
                               ": \"similarity\": stage 1 needs a level in [0, ", opt_.n_levels, ")",
                               r.similarity ? ", got " + std::to_string(*r.similarity) : std::string(", but it is missing"));
            ALIGNGPT_CHECK(turns.size() == 2, where, ": \"conversations\": the plain template takes 2 turns, got ", turns.size());
            ALIGNGPT_CHECK(turns[0].value.find(image_tag) != std::string::npos, where,
                           ": \"conversations\"[0].\"value\": the plain template needs \"<image>\" in the first turn");
            p.enc = preprocess_plain(tok_, turns);
            p.level = opt_.n_levels > 0 ? *r.similarity : -1;
        } else {
            p.enc = preprocess_v1(tok_, v1_prompt(turns, where), image, max_length_, pad_id());
        }
        return p;
    }

    /// Record i as the reference's LazySupervisedDataset[i] followed by the collator and the
    /// model's attention-mask indexing.
    example get(std::size_t i) const {
        prepared p = prepare(i);
        example ex;
        ex.id = std::move(p.rec.id);
        ex.mismatch = p.enc.mismatch;
        ex.sample = collated_sample(p.enc, max_length_, pad_id(), p.level);
        if (p.rec.image) ex.pixels = load_pixels(index_.where(i), *p.rec.image);
        return ex;
    }

    /// The pad id of training (train.py sets pad = unk).
    std::int64_t pad_id() const { return tok_.unk_id(); }

private:
    std::string folder_;
    tokenizer::llama_tokenizer tok_;
    data_template template_;
    io::clip_image_processor_config image_;
    std::int64_t max_length_;
    dataset_options opt_;
    record_index index_;

    void check_stage1(std::size_t i, const record_entry& e) const {
        ALIGNGPT_CHECK(e.has_image, index_.where(i),
                       ": \"image\": stage 1 (plain) needs an image in every record, but it is missing");
        if (opt_.n_levels == 0) return;
        ALIGNGPT_CHECK(e.has_similarity, index_.where(i), ": \"similarity\": stage 1 needs a level in [0, ", opt_.n_levels,
                       "), but it is missing");
        ALIGNGPT_CHECK(e.level && *e.level >= 0 && *e.level < opt_.n_levels, index_.where(i),
                       ": \"similarity\": stage 1 needs a level in [0, ", opt_.n_levels, ")",
                       e.level ? ", got " + std::to_string(*e.level) : std::string(", got a value that is not an integer"));
    }

    /// os.path.join(image_folder, image) (an absolute "image" replaces the folder, as in Python).
    tensor<float> load_pixels(const std::string& where, const std::string& rel) const {
        const std::string path = (std::filesystem::path(folder_) / rel).string();
        try {
            return io::clip_preprocess(io::load_image(path), image_, path);
        } catch (const aligngpt::error& err) { fail(where, ": \"image\" ", io::detail::quote_name(rel), ": ", err.what()); }
    }
};

// ---------------------------------------------------------------------------------------------
// Sample order

namespace detail {

/// Seeded Fisher-Yates: p = [0, n); for i = n-1 down to 1: j = floor(u_i * (i + 1)) with
/// u_i = bits(k, 0, i) / 2^64 (computed exactly as (bits * (i + 1)) >> 64 in 128-bit integers;
/// bias <= n / 2^64), swap(p[i], p[j]); the key k = rng::bits(seed, stream, epoch).
inline std::vector<std::size_t> seeded_permutation(std::size_t n, std::uint64_t seed, std::uint64_t stream, std::uint64_t epoch) {
    std::vector<std::size_t> p(n);
    for (std::size_t i = 0; i < n; i++) p[i] = i;
    const std::uint64_t k = rng::bits(seed, stream, epoch);
    for (std::size_t i = n; i-- > 1;) {
        const rng::uint128 x = static_cast<rng::uint128>(rng::bits(k, 0, i)) * (i + 1);
        std::swap(p[i], p[std::size_t(x >> 64)]);
    }
    return p;
}

}  // namespace detail

/// The order of one epoch: a permutation of [0, n) that depends only on (seed, epoch); the
/// algorithm is detail::seeded_permutation with stream fnv1a64("aligngpt.train.epoch_order").
inline std::vector<std::size_t> epoch_order(std::size_t n, std::uint64_t seed, std::uint64_t epoch) {
    return detail::seeded_permutation(n, seed, rng::fnv1a64("aligngpt.train.epoch_order"), epoch);
}

/// Which permutation the grouped order draws: the reference draws image / text from torch's global
/// generator, megabatches (and all samples, for one modality) from the sampler's generator.
enum class order_draw { image_samples, text_samples, megabatches, all_samples };
using permutation_source = std::function<std::vector<std::size_t>(std::size_t n, order_draw what)>;

namespace detail {

/// split_to_even_chunks: strided when the megabatch does not split evenly, else each index (in
/// order) goes to the chunk with the smallest total length (first on ties) until it is full.
inline std::vector<std::vector<std::size_t>> split_to_even_chunks(const std::vector<std::size_t>& idx,
                                                                  const std::vector<std::int64_t>& lengths, std::size_t k) {
    std::vector<std::vector<std::size_t>> chunks(k);
    if (idx.size() % k != 0) {
        for (std::size_t i = 0; i < idx.size(); i++) chunks[i % k].push_back(idx[i]);
        return chunks;
    }
    const std::size_t per = idx.size() / k;
    std::vector<std::int64_t> total(k, 0);
    std::vector<bool> full(k, false);  // the reference's float("inf")
    for (std::size_t i : idx) {
        std::size_t best = k;
        for (std::size_t c = 0; c < k; c++)
            if (!full[c] && (best == k || total[c] < total[best])) best = c;
        chunks[best].push_back(i);
        total[best] += lengths[i];
        if (chunks[best].size() == per) full[best] = true;
    }
    return chunks;
}

/// get_length_grouped_indices: megabatches of world * batch of a permutation, each sorted by
/// length (longest first, stable) and split evenly over the ranks.
inline std::vector<std::size_t> length_grouped(const std::vector<std::int64_t>& lengths, std::size_t batch, std::size_t world,
                                               const std::vector<std::size_t>& perm) {
    const std::size_t mb = batch * world;
    std::vector<std::size_t> out;
    out.reserve(lengths.size());
    for (std::size_t s = 0; s < perm.size(); s += mb) {
        std::vector<std::size_t> m(perm.begin() + std::ptrdiff_t(s),
                                   perm.begin() + std::ptrdiff_t(std::min(s + mb, perm.size())));
        std::stable_sort(m.begin(), m.end(), [&](std::size_t a, std::size_t b) { return lengths[a] > lengths[b]; });
        for (const auto& chunk : split_to_even_chunks(m, lengths, world)) out.insert(out.end(), chunk.begin(), chunk.end());
    }
    return out;
}

inline std::vector<std::size_t> checked_permutation(const permutation_source& perm, std::size_t n, order_draw what) {
    std::vector<std::size_t> p = perm(n, what);
    std::vector<bool> seen(n, false);
    ALIGNGPT_CHECK(p.size() == n, "modality_grouped_order: the permutation source gave ", p.size(), " indices for ", n);
    for (std::size_t v : p) {
        ALIGNGPT_CHECK(v < n && !seen[v], "modality_grouped_order: the permutation source did not give a permutation of ", n);
        seen[v] = true;
    }
    return p;
}

}  // namespace detail

/// The reference's get_modality_length_grouped_indices (group_by_modality_length) with the
/// permutations taken from `perm` instead of torch.randperm: lengths > 0 are image records, < 0
/// text-only ones (0 is refused, as the reference asserts). One modality: get_length_grouped_indices
/// over all records. Both: each modality is length-grouped on its own, cut into megabatches of
/// world * batch; all but the last megabatch of each are shuffled together; the two last ones are
/// merged, sorted by record index (Python's sorted(), as the reference), and go at the end.
inline std::vector<std::size_t> modality_grouped_order(const std::vector<std::int64_t>& lengths, std::size_t batch_size,
                                                       std::size_t world_size, const permutation_source& perm) {
    ALIGNGPT_CHECK(batch_size >= 1 && world_size >= 1, "modality_grouped_order: batch size ", batch_size, " and world size ",
                   world_size, " must be >= 1");
    for (std::size_t i = 0; i < lengths.size(); i++)
        ALIGNGPT_CHECK(lengths[i] != 0, "modality_grouped_order: record ", i,
                       " has length 0 (no words; the reference refuses it)");
    const bool any_image = std::any_of(lengths.begin(), lengths.end(), [](std::int64_t l) { return l > 0; });
    const bool any_text = std::any_of(lengths.begin(), lengths.end(), [](std::int64_t l) { return l < 0; });
    if (!(any_image && any_text))
        return detail::length_grouped(lengths, batch_size, world_size,
                                      detail::checked_permutation(perm, lengths.size(), order_draw::all_samples));
    const std::size_t mb = batch_size * world_size;
    std::vector<std::vector<std::size_t>> megabatches, last;
    for (const bool image : {true, false}) {
        std::vector<std::size_t> idx;
        std::vector<std::int64_t> len;
        for (std::size_t i = 0; i < lengths.size(); i++)
            if ((lengths[i] > 0) == image) idx.push_back(i), len.push_back(image ? lengths[i] : -lengths[i]);
        const auto p =
            detail::checked_permutation(perm, idx.size(), image ? order_draw::image_samples : order_draw::text_samples);
        const std::vector<std::size_t> grouped = detail::length_grouped(len, batch_size, world_size, p);
        std::vector<std::vector<std::size_t>> mine;
        for (std::size_t s = 0; s < grouped.size(); s += mb) {
            mine.emplace_back();
            for (std::size_t k = s; k < std::min(s + mb, grouped.size()); k++) mine.back().push_back(idx[grouped[k]]);
        }
        last.push_back(mine.back());
        megabatches.insert(megabatches.end(), mine.begin(), mine.end() - 1);
    }
    const auto p = detail::checked_permutation(perm, megabatches.size(), order_draw::megabatches);
    std::vector<std::size_t> out;
    out.reserve(lengths.size());
    for (std::size_t k : p) out.insert(out.end(), megabatches[k].begin(), megabatches[k].end());
    std::vector<std::size_t> tail = last[0];
    tail.insert(tail.end(), last[1].begin(), last[1].end());
    std::sort(tail.begin(), tail.end());
    out.insert(out.end(), tail.begin(), tail.end());
    return out;
}

/// The same grouping with our seeded permutations (torch.randperm's generator cannot be matched;
/// the grouping logic is what matches the reference): each draw is detail::seeded_permutation with
/// stream fnv1a64("aligngpt.train.modality_order/<draw>"), so the order depends only on (seed, epoch).
inline std::vector<std::size_t> modality_grouped_order(const std::vector<std::int64_t>& lengths, std::size_t batch_size,
                                                       std::size_t world_size, std::uint64_t seed, std::uint64_t epoch) {
    return modality_grouped_order(lengths, batch_size, world_size, [&](std::size_t n, order_draw what) {
        static constexpr std::string_view names[] = {"aligngpt.train.modality_order/image", "aligngpt.train.modality_order/text",
                                                     "aligngpt.train.modality_order/megabatches",
                                                     "aligngpt.train.modality_order/all"};
        return detail::seeded_permutation(n, seed, rng::fnv1a64(names[int(what)]), epoch);
    });
}

}  // namespace aligngpt::train
