#pragma once
// The LLaMA / Vicuna tokenizer as transformers 4.31's SLOW `LlamaTokenizer` (use_fast=False, what
// AlignGPT loads) computes it, and LLaVA's `tokenizer_image_token` (the official mm_utils.py).
// Needs the aligngpt::tokenizer component: SentencePiece (Debian libsentencepiece-dev) runs the
// piece model; this file is the transformers layer around it, written by hand:
//
//   encode(text)   1. legacy false (the published checkpoints): text = "▁" + text with every "▁"
//                     replaced by " " (LlamaTokenizer.tokenize);
//                  2. split on the special tokens (<s>, </s>, <unk>, and pad when set), leftmost
//                     first; an AddedToken with lstrip/rstrip eats the whitespace beside it
//                     (PreTrainedTokenizer.tokenize);
//                  3. each text segment goes through SentencePiece. Legacy false only: the first
//                     segment loses the "▁" of step 1 before encoding (SentencePiece adds its own
//                     dummy prefix), and a later segment that does not begin with a space loses
//                     the "▁" of its first piece (LlamaTokenizer._tokenize), which then may map to
//                     another id or to <unk>. Legacy true: every segment gets the dummy prefix;
//                  4. pieces -> ids (an unknown piece is <unk>); BOS / EOS as add_bos_token /
//                     add_eos_token say.
//   decode(ids)    ids -> pieces (special ids dropped when skip_special_tokens); special pieces
//                  are written as they are, with a space before one that follows ordinary pieces
//                  (not at the start); each run of ordinary pieces is decoded by SentencePiece
//                  (▁ -> space, the leading space of the run dropped, byte pieces joined and
//                  invalid UTF-8 written as U+FFFD) (LlamaTokenizer.convert_tokens_to_string);
//                  clean_up_tokenization_spaces when the config says so.
//
// tokenizer.model and tokenizer_config.json are untrusted input (docs/model.md §11.4): sizes are
// bounded before reading, the model must parse and hold the special tokens, every config field is
// checked, and every error names the file and the field. Text to encode must be valid UTF-8 (a
// Python str always is). Added tokens that are not in tokenizer.model (pad "<pad>",
// additional_special_tokens) are refused: the published checkpoints have none. added_tokens.json and
// special_tokens_map.json are not read (the published special_tokens_map.json repeats the config's
// <s>, </s>, <unk>).
//
//   auto tok = tokenizer::llama_tokenizer::from_directory(model_dir);  // tokenizer.model + config
//   std::vector<std::int64_t> ids = tokenizer::tokenizer_image_token(tok, prompt);  // -200 = image
//   std::string answer = tok.decode(new_ids, /*skip_special_tokens=*/true);
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <sentencepiece_processor.h>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"

namespace aligngpt::tokenizer {

/// LLaVA's placeholder id for the image in prompt ids (IMAGE_TOKEN_INDEX), docs/model.md §7.1.
inline constexpr std::int64_t image_token_index = -200;

/// A special token as transformers' AddedToken: its text, and whether it eats the whitespace on
/// its left (lstrip) or right (rstrip). LlamaTokenizer's defaults strip nothing.
struct special_token {
    std::string content;
    bool lstrip = false, rstrip = false;
};

/// The fields of tokenizer_config.json that the slow LlamaTokenizer reads, with its defaults.
struct llama_tokenizer_config {
    bool add_bos_token = true;
    bool add_eos_token = false;
    bool legacy = true;  ///< LlamaTokenizer's default; the published checkpoints say false
    bool clean_up_tokenization_spaces = false;
    special_token bos{"<s>"}, eos{"</s>"}, unk{"<unk>"};
    std::optional<special_token> pad;                       ///< null in the published configs
    std::int64_t model_max_length = std::int64_t(1) << 62;  ///< "no limit" unless the config says

    static constexpr std::uint64_t max_file_bytes = std::uint64_t(1) << 20;

    /// Reads tokenizer_config.json (`file` names it in errors). Fields it does not know are ignored,
    /// as transformers ignores them.
    static llama_tokenizer_config parse(const nlohmann::json& j, const std::string& file) {
        const io::json_reader r(j, file);
        llama_tokenizer_config c;
        c.add_bos_token = r.boolean("add_bos_token", true);
        c.add_eos_token = r.boolean("add_eos_token", false);
        c.legacy = r.boolean("legacy", true);
        c.clean_up_tokenization_spaces = r.boolean("clean_up_tokenization_spaces", false);
        // Often 1e30-like (transformers' VERY_LARGE_INTEGER): anything above 2^62 means no limit.
        const double mml = r.number("model_max_length", double(c.model_max_length), 1, io::json_reader::any);
        c.model_max_length = mml >= double(std::int64_t(1) << 62) ? std::int64_t(1) << 62 : std::int64_t(mml);
        c.bos = token_field(r, "bos_token", c.bos);
        c.eos = token_field(r, "eos_token", c.eos);
        c.unk = token_field(r, "unk_token", c.unk);
        if (r.has("pad_token")) c.pad = token_field(r, "pad_token", special_token{});
        if (const nlohmann::json* a = r.get("additional_special_tokens"); a && !(a->is_array() && a->empty()))
            r.fail("additional_special_tokens", "is not supported (the published checkpoints have none), got ",
                   io::detail::json_text(*a));
        if (const nlohmann::json* k = r.get("sp_model_kwargs"); k && !(k->is_object() && k->empty()))
            r.fail("sp_model_kwargs", "must be empty (sampling SentencePiece options change the ids), got ",
                   io::detail::json_text(*k));
        return c;
    }

private:
    /// A special token field: a string, or an AddedToken object {"content": ..., "lstrip": ...}.
    static special_token token_field(const io::json_reader& r, std::string_view key, special_token def) {
        const nlohmann::json* v = r.get(key);
        if (!v) return def;
        special_token t;
        if (v->is_string()) {
            t.content = v->get<std::string>();
        } else if (v->is_object()) {
            const io::json_reader o = r.object(key);
            t.content = o.string("content", std::nullopt);
            t.lstrip = o.boolean("lstrip", false);
            t.rstrip = o.boolean("rstrip", false);
        } else {
            r.must_be(key, "a string or an AddedToken object");
        }
        if (t.content.empty() || t.content.size() > 256 || io::detail::utf8_error_at(t.content) != std::string_view::npos)
            r.must_be(key, "a token of 1 to 256 bytes of UTF-8");
        return t;
    }
};

/// Python's str.isspace() for one code point (what str.strip() removes).
inline bool is_python_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace detail {

inline constexpr std::string_view spiece_underline = "\xE2\x96\x81";  // U+2581 "▁"

/// The code point starting at s[i] (s is valid UTF-8) and its length in bytes.
inline std::pair<char32_t, std::size_t> utf8_at(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return char32_t(static_cast<unsigned char>(s[i + k])); };
    const char32_t c = b(0);
    if (c < 0x80) return {c, 1};
    if (c < 0xE0) return {((c & 0x1F) << 6) | (b(1) & 0x3F), 2};
    if (c < 0xF0) return {((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F), 3};
    return {((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F), 4};
}

/// s without leading (left) or trailing (right) Python whitespace.
inline std::string strip_side(std::string_view s, bool left) {
    std::size_t lo = 0, hi = s.size();
    if (left) {
        while (lo < hi) {
            const auto [c, n] = utf8_at(s, lo);
            if (!is_python_space(c)) break;
            lo += n;
        }
    } else {
        std::size_t end = 0;  // the end of the last non-space code point
        for (std::size_t i = 0; i < hi;) {
            const auto [c, n] = utf8_at(s, i);
            i += n;
            if (!is_python_space(c)) end = i;
        }
        hi = end;
    }
    return std::string(s.substr(lo, hi - lo));
}

inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    for (std::size_t i = 0;;) {
        const std::size_t j = s.find(from, i);
        if (j == std::string_view::npos) return out.append(s.substr(i));
        out.append(s.substr(i, j - i)).append(to);
        i = j + from.size();
    }
}

/// One field of a protobuf message in wire format: its number, its wire type, and for a
/// length-delimited field (wire type 2: strings, bytes, sub-messages) its bytes.
struct proto_field {
    std::uint64_t number;
    unsigned wire_type;
    std::string_view bytes;
};

/// Calls f(field) on each field of the serialised message `m`, in order; false when `m` is not
/// well-formed wire format, or uses groups (wire types 3, 4), which SentencePiece's messages do not.
template <class F>
bool for_each_proto_field(std::string_view m, F&& f) {
    std::size_t i = 0;
    const auto varint = [&](std::uint64_t& v) {
        v = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {  // at most 10 bytes
            if (i == m.size()) return false;
            const auto b = static_cast<unsigned char>(m[i++]);
            v |= std::uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return true;
        }
        return false;
    };
    while (i < m.size()) {
        std::uint64_t key = 0, n = 0;
        if (!varint(key)) return false;
        const auto wire_type = unsigned(key & 7);
        if (wire_type == 0) {  // a varint value: nothing follows it
            if (!varint(n)) return false;
            n = 0;
        } else if (wire_type == 2) {  // a varint length, then that many bytes
            if (!varint(n)) return false;
        } else if (wire_type == 1 || wire_type == 5) {
            n = wire_type == 1 ? 8 : 4;
        } else {
            return false;
        }
        if (n > m.size() - i) return false;
        f(proto_field{key >> 3, wire_type, wire_type == 2 ? m.substr(i, std::size_t(n)) : std::string_view()});
        i += std::size_t(n);
    }
    return true;
}

/// What SentencePiece 0.1.97 cannot load safely, found before it sees the bytes (an empty string
/// when there is nothing). Its piece tries (Darts) take NUL-terminated keys and throw on an empty
/// one through library code that cannot pass an exception on (std::terminate: a fuzzer found it),
/// so a piece may hold no NUL byte. Its normaliser follows a precompiled table
/// (normalizer_spec.precompiled_charsmap) with no bounds checks, so only the identity normaliser,
/// which has no table, is taken: LLaMA's tokenizer.model is such a model. Fields, by number
/// (sentencepiece_model.proto): ModelProto {1: pieces, 3: normalizer_spec, 5: denormalizer_spec},
/// SentencePiece {1: piece}, NormalizerSpec {2: precompiled_charsmap}. A field of a known number
/// with another wire type is, to protobuf, an unknown field, and is skipped here as there.
inline std::string sentencepiece_model_problem(std::string_view model) {
    std::string problem;
    std::size_t piece = 0;
    const auto fail = [&](std::string what) {
        if (problem.empty()) problem = std::move(what);
    };
    const bool well_formed = for_each_proto_field(model, [&](const proto_field& f) {
        if (f.wire_type != 2) return;
        if (f.number == 1) {
            if (!for_each_proto_field(f.bytes, [&](const proto_field& p) {
                    if (p.number == 1 && p.wire_type == 2 && p.bytes.find('\0') != std::string_view::npos)
                        fail("pieces[" + std::to_string(piece) +
                             "].piece holds a NUL byte (SentencePiece's piece trie cannot hold one)");
                }))
                fail("pieces[" + std::to_string(piece) + "] is not a well-formed protobuf message");
            piece++;
        } else if (f.number == 3 || f.number == 5) {
            const std::string which = f.number == 3 ? "normalizer_spec" : "denormalizer_spec";
            if (!for_each_proto_field(f.bytes, [&](const proto_field& p) {
                    if (p.number == 2 && p.wire_type == 2 && !p.bytes.empty())
                        fail(which + ".precompiled_charsmap holds a table of " + std::to_string(p.bytes.size()) +
                             " bytes: only the identity normaliser, which has none, is supported "
                             "(SentencePiece reads the table without bounds checks)");
                }))
                fail(which + " is not a well-formed protobuf message");
        }
    });
    if (!well_formed) fail("the protobuf wire format is broken");
    return problem;
}

}  // namespace detail

/// Python's str.strip(): s without leading and trailing whitespace (s is valid UTF-8).
inline std::string strip(std::string_view s) { return detail::strip_side(detail::strip_side(s, true), false); }

/// transformers' clean_up_tokenization: drops the space before punctuation and English contractions.
inline std::string clean_up_tokenization(std::string s) {
    static constexpr std::pair<std::string_view, std::string_view> rules[] = {
        {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (const auto& [from, to] : rules) s = detail::replace_all(s, from, to);
    return s;
}

class llama_tokenizer {
public:
    static constexpr std::uint64_t max_model_bytes = std::uint64_t(64) << 20;  ///< LLaMA's is 500 KB
    static constexpr int max_pieces = 1 << 20;

    /// From the bytes of a tokenizer.model (`model_file` names it in errors) and a config.
    llama_tokenizer(std::string_view model_bytes, const std::string& model_file, llama_tokenizer_config cfg)
        : cfg_(std::move(cfg)), sp_(std::make_shared<sentencepiece::SentencePieceProcessor>()) {
        ALIGNGPT_CHECK(model_bytes.size() <= max_model_bytes, model_file, ": ", model_bytes.size(),
                       " bytes, more than the limit of ", max_model_bytes, " for a SentencePiece model");
        const std::string problem = detail::sentencepiece_model_problem(model_bytes);
        ALIGNGPT_CHECK(problem.empty(), model_file, ": not a valid SentencePiece model: ", problem);
        const auto st = sp_->LoadFromSerializedProto(model_bytes);
        ALIGNGPT_CHECK(st.ok(), model_file, ": not a valid SentencePiece model: ", st.ToString());
        const int n = sp_->GetPieceSize();
        ALIGNGPT_CHECK(n >= 3 && n <= max_pieces, model_file, ": ", n, " pieces, expected 3 to ", max_pieces);
        const auto id_of = [&](const special_token& t, const char* field) {
            const int id = sp_->PieceToId(t.content);
            // PieceToId answers unk_id() for a piece it does not have.
            ALIGNGPT_CHECK(id >= 0 && id < n && sp_->IdToPiece(id) == t.content, model_file, ": the ", field, " ",
                           io::detail::quote_name(t.content),
                           " is not a piece of the model (added tokens outside tokenizer.model are not supported)");
            return std::int64_t(id);
        };
        bos_id_ = id_of(cfg_.bos, "bos_token");
        eos_id_ = id_of(cfg_.eos, "eos_token");
        unk_id_ = id_of(cfg_.unk, "unk_token");
        specials_ = {cfg_.bos, cfg_.eos, cfg_.unk};
        special_ids_ = {bos_id_, eos_id_, unk_id_};
        if (cfg_.pad) {
            pad_id_ = id_of(*cfg_.pad, "pad_token");
            specials_.push_back(*cfg_.pad);
            special_ids_.push_back(pad_id_);
        }
    }

    /// `dir`/tokenizer.model and, when present, `dir`/tokenizer_config.json (else the defaults of
    /// LlamaTokenizer, legacy true).
    static llama_tokenizer from_directory(const std::string& dir) {
        const std::string cfg = dir + "/tokenizer_config.json";
        std::error_code ec;
        const bool has_cfg = std::filesystem::exists(cfg, ec);
        return from_files(dir + "/tokenizer.model", has_cfg ? std::optional(cfg) : std::nullopt);
    }
    static llama_tokenizer from_files(const std::string& model_file, const std::optional<std::string>& config_file) {
        llama_tokenizer_config c;
        if (config_file) {
            io::json_parse_options o;
            o.max_bytes = llama_tokenizer_config::max_file_bytes;
            o.refuse_duplicate_keys = true;
            o.max_depth = 8;
            c = llama_tokenizer_config::parse(io::read_json_file(*config_file, o), *config_file);
        }
        return llama_tokenizer(io::read_text_file(model_file, max_model_bytes), model_file, std::move(c));
    }

    const llama_tokenizer_config& config() const { return cfg_; }
    std::int64_t vocab_size() const { return sp_->GetPieceSize(); }
    std::int64_t bos_id() const { return bos_id_; }
    std::int64_t eos_id() const { return eos_id_; }
    std::int64_t unk_id() const { return unk_id_; }
    std::optional<std::int64_t> pad_id() const { return cfg_.pad ? std::optional(pad_id_) : std::nullopt; }
    bool is_special(std::int64_t id) const {
        for (std::int64_t s : special_ids_)
            if (s == id) return true;
        return false;
    }

    /// The pieces of `text` (LlamaTokenizer.tokenize): special tokens appear as their text.
    std::vector<std::string> tokenize(std::string_view text) const {
        const std::size_t bad = io::detail::utf8_error_at(text);
        ALIGNGPT_CHECK(bad == std::string_view::npos, "tokenizer: the text is not valid UTF-8 (byte ", bad, ")");
        const std::string_view U = detail::spiece_underline;
        std::string t = cfg_.legacy ? std::string(text) : std::string(U) + detail::replace_all(text, U, " ");

        // Split on special tokens: (segment, index of the special token or -1).
        std::vector<std::pair<std::string, int>> parts;
        std::size_t start = 0;
        for (std::size_t i = 0; i < t.size();) {
            int hit = -1;
            for (std::size_t k = 0; k < specials_.size(); k++) {
                const std::string& c = specials_[k].content;
                if (t.compare(i, c.size(), c) == 0 && (hit < 0 || c.size() > specials_[std::size_t(hit)].content.size()))
                    hit = int(k);
            }
            if (hit < 0) {
                i++;
                continue;
            }
            if (i > start) parts.emplace_back(t.substr(start, i - start), -1);
            parts.emplace_back(specials_[std::size_t(hit)].content, hit);
            i += specials_[std::size_t(hit)].content.size();
            start = i;
        }
        if (start < t.size()) parts.emplace_back(t.substr(start), -1);
        for (std::size_t i = 0; i < parts.size(); i++) {
            if (parts[i].second < 0) continue;
            const special_token& s = specials_[std::size_t(parts[i].second)];
            if (s.rstrip && i + 1 < parts.size() && !parts[i + 1].first.empty())
                parts[i + 1].first = detail::strip_side(parts[i + 1].first, true);
            if (s.lstrip && i > 0 && !parts[i - 1].first.empty())
                parts[i - 1].first = detail::strip_side(parts[i - 1].first, false);
        }

        std::vector<std::string> out;
        for (const auto& [seg, special] : parts) {
            if (seg.empty()) continue;
            if (special >= 0) {
                out.push_back(seg);
                continue;
            }
            for (auto& p : sentencepiece_pieces(seg)) out.push_back(std::move(p));
        }
        return out;
    }

    /// tokenizer(text).input_ids (add_special_tokens) or tokenizer(text, add_special_tokens=False).
    std::vector<std::int64_t> encode(std::string_view text, bool add_special_tokens = true) const {
        std::vector<std::int64_t> ids;
        if (add_special_tokens && cfg_.add_bos_token) ids.push_back(bos_id_);
        for (const std::string& p : tokenize(text)) ids.push_back(sp_->PieceToId(p));  // unknown -> unk
        if (add_special_tokens && cfg_.add_eos_token) ids.push_back(eos_id_);
        return ids;
    }

    /// The piece of one id; an id outside the vocabulary is an error (the reference raises).
    std::string id_to_piece(std::int64_t id) const {
        ALIGNGPT_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id ", id, " is outside the vocabulary [0, ", vocab_size(),
                       ")");
        return sp_->IdToPiece(int(id));
    }

    /// tokenizer.decode(ids, skip_special_tokens) of transformers 4.31 (spaces_between_special_tokens
    /// has no effect here: with no added tokens there is one sub-text).
    std::string decode(std::span<const std::int64_t> ids, bool skip_special_tokens = false) const {
        std::vector<std::string> tokens;
        for (std::int64_t id : ids) {
            if (skip_special_tokens && is_special(id)) continue;
            tokens.push_back(id_to_piece(id));
        }
        std::string out, run_text;
        std::vector<std::string> run;
        bool prev_special = false;
        for (std::size_t i = 0; i < tokens.size(); i++) {
            if (is_special_text(tokens[i])) {
                if (!prev_special && i != 0) out += ' ';
                out += decode_pieces(run) + tokens[i];
                prev_special = true;
                run.clear();
            } else {
                run.push_back(tokens[i]);
                prev_special = false;
            }
        }
        out += decode_pieces(run);
        return cfg_.clean_up_tokenization_spaces ? clean_up_tokenization(std::move(out)) : out;
    }

private:
    bool is_special_text(const std::string& piece) const {
        for (const special_token& s : specials_)
            if (s.content == piece) return true;
        return false;
    }

    /// LlamaTokenizer._tokenize: one segment between special tokens through SentencePiece.
    std::vector<std::string> sentencepiece_pieces(std::string seg) const {
        const std::string_view U = detail::spiece_underline;
        bool is_first = false;
        if (!cfg_.legacy) {
            is_first = seg.starts_with(U);
            if (is_first) seg.erase(0, U.size());
        }
        std::vector<std::string> pieces;
        const auto st = sp_->Encode(seg, &pieces);
        ALIGNGPT_CHECK(st.ok(), "tokenizer: SentencePiece could not encode the text: ", st.ToString());
        // The reference indexes tokens[0] unguarded (an IndexError when SentencePiece returns
        // nothing); we skip the step instead.
        if (!cfg_.legacy && !is_first && !seg.starts_with(' ') && !pieces.empty() && pieces[0].starts_with(U)) {
            if (pieces[0].size() > U.size())
                pieces[0].erase(0, U.size());
            else
                pieces.erase(pieces.begin());
        }
        return pieces;
    }

    std::string decode_pieces(const std::vector<std::string>& pieces) const {
        std::string s;
        if (pieces.empty()) return s;
        const auto st = sp_->Decode(pieces, &s);
        ALIGNGPT_CHECK(st.ok(), "tokenizer: SentencePiece could not decode: ", st.ToString());
        return s;
    }

    llama_tokenizer_config cfg_;
    std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;  // immutable after construction
    std::int64_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1, pad_id_ = -1;
    std::vector<special_token> specials_;  // bos, eos, unk[, pad]: all_special_tokens
    std::vector<std::int64_t> special_ids_;
};

/// LLaVA's tokenizer_image_token (mm_utils.py): the prompt split on "<image>", each chunk encoded
/// with special tokens, joined by `image_index`; the BOS of the first chunk is kept once, every
/// other chunk's first id dropped when the first chunk starts with BOS.
inline std::vector<std::int64_t> tokenizer_image_token(const llama_tokenizer& tok, std::string_view prompt,
                                                       std::int64_t image_index = image_token_index) {
    static constexpr std::string_view tag = "<image>";
    std::vector<std::vector<std::int64_t>> chunks;
    for (std::size_t i = 0;;) {  // Python's str.split: n tags give n + 1 chunks, empty ones included
        const std::size_t j = prompt.find(tag, i);
        chunks.push_back(tok.encode(prompt.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i)));
        if (j == std::string_view::npos) break;
        i = j + tag.size();
    }
    std::vector<std::int64_t> ids;
    std::size_t offset = 0;
    if (!chunks[0].empty() && chunks[0][0] == tok.bos_id()) {
        offset = 1;
        ids.push_back(chunks[0][0]);
    }
    // insert_separator(chunks, [image] * (offset + 1)), then every element from `offset` on: the
    // separator leaves one image id.
    for (std::size_t c = 0; c < chunks.size(); c++) {
        if (c > 0) ids.push_back(image_index);
        for (std::size_t k = offset; k < chunks[c].size(); k++) ids.push_back(chunks[c][k]);
    }
    return ids;
}

}  // namespace aligngpt::tokenizer
