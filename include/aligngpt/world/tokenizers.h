#pragma once
// Tokenizers learned from the tiny world's text (issue #11, step 1), stand-ins for the published ones:
//
//   * a LLaMA SentencePiece BPE model (tokenizer.model + tokenizer_config.json, as vicuna-7b-v1.5
//     ships them) trained by the SentencePiece trainer library in LLaMA's settings: byte_fallback,
//     <unk>/<s>/</s> = 0/1/2, no pad, identity normalisation, split digits, dummy prefix, extra
//     whitespace kept (the settings of tests/tools/golden/tokenizer.py's _train); one thread and the
//     input in file order, so the model is a function of the text. hard_vocab_limit is off: the
//     world has fewer than 100 words, and the model stops at fewer pieces than asked rather than fail;
//   * a CLIP byte-level BPE (vocab.json + merges.txt in the layout of openai/clip-vit-*), learned
//     here: the words of the captions as tokenizer/clip.h splits them (lower-cased, CLIP's pattern),
//     each a sequence of bytes_to_unicode symbols with "</w>" on the last; repeatedly the most
//     frequent adjacent pair (ties: the smaller pair of symbol strings) becomes a merge, until
//     n_merges or no pair is left. The vocabulary is CLIP's order: the 256 byte symbols, the same
//     with "</w>", one entry per merge, then <|startoftext|> and <|endoftext|> last, so the EOT id is
//     the largest and the text tower's argmax pooling finds it (models/clip_text.h).
//
//   auto lines = world::tokenizer_corpus(world_dir);          // captions, turns, the vicuna_v1 prompt
//   world::train_llama_tokenizer(lines, "out/llm", {.vocab_size = 700});
//   auto bpe = world::learn_clip_bpe(world::caption_texts(world_dir), 600);
//   world::write_clip_tokenizer(bpe, "out/clip");
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <sentencepiece_trainer.h>

#include "aligngpt/config.h"
#include "aligngpt/conversation.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"
#include "aligngpt/tokenizer/clip.h"

namespace aligngpt::world {

// ---- the world's text -------------------------------------------------------------------------

namespace tok_detail {

/// The "value" of every turn of every record of a LLaVA JSON array, "<image>\n" removed; `from`
/// (if not empty) keeps only the turns of that speaker. Errors name the file, record and field.
inline std::vector<std::string> turn_values(const std::string& path, std::string_view from = {}) {
    io::json_parse_options po;
    po.max_bytes = std::uint64_t(4) << 30;
    const nlohmann::json j = io::read_json_file(path, po);
    ALIGNGPT_CHECK(j.is_array(), path, ": must be a JSON array of records");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < j.size(); i++) {
        const io::json_reader r(j[i], path + ": record " + std::to_string(i));
        const nlohmann::json* conv = r.get("conversations");
        if (!conv || !conv->is_array()) r.must_be("conversations", "an array of turns");
        for (std::size_t t = 0; t < conv->size(); t++) {
            const io::json_reader tr((*conv)[t], path + ": record " + std::to_string(i) + ": turn " + std::to_string(t));
            const std::string who = tr.string("from", std::nullopt);
            std::string v = tr.string("value", std::nullopt);
            if (!from.empty() && who != from) continue;
            for (std::size_t p; (p = v.find("<image>\n")) != std::string::npos;) v.erase(p, 8);
            for (std::size_t p; (p = v.find("<image>")) != std::string::npos;) v.erase(p, 7);
            out.push_back(std::move(v));
        }
    }
    return out;
}

/// Writes text to path atomically (io::atomic_file).
inline void write_text(const std::string& path, const std::string& text) {
    io::atomic_file f(path);
    f.write(text.data(), text.size());
    f.commit();
}
inline void write_json(const std::string& path, const nlohmann::ordered_json& j) { write_text(path, j.dump(2) + "\n"); }

}  // namespace tok_detail

/// The captions of captions.json (the gpt turns), in file order.
inline std::vector<std::string> caption_texts(const std::string& world_dir) {
    return tok_detail::turn_values(world_dir + "/captions.json", "gpt");
}

/// What the LLaMA tokenizer learns from: the captions, every instruction turn, the vicuna_v1 system
/// prompt and a line with its role tags, in that order.
inline std::vector<std::string> tokenizer_corpus(const std::string& world_dir) {
    std::vector<std::string> lines = caption_texts(world_dir);
    for (auto& v : tok_detail::turn_values(world_dir + "/instruct.json")) lines.push_back(std::move(v));
    const conversation::conversation c = conversation::make("vicuna_v1");
    lines.push_back(c.system);
    lines.push_back(c.roles[0] + ": " + c.roles[1] + ": " + c.sep2.value_or(""));
    return lines;
}

// ---- LLaMA SentencePiece ----------------------------------------------------------------------

struct llama_tokenizer_options {
    int vocab_size = 700;  ///< including <unk>, <s>, </s> and the 256 byte pieces
    int model_max_length = 4096;
};

/// Trains tokenizer.model and writes it with tokenizer_config.json into dir (created if needed).
/// Returns the serialized model.
inline std::string train_llama_tokenizer(const std::vector<std::string>& lines, const std::string& dir,
                                         const llama_tokenizer_options& o = {}) {
    ALIGNGPT_CHECK(o.vocab_size >= 300 && o.vocab_size <= 32000,
                   "train_llama_tokenizer: vocab_size must be in [300, 32000], got ", o.vocab_size);
    ALIGNGPT_CHECK(!lines.empty(), "train_llama_tokenizer: no text to learn from");
    struct iterator : sentencepiece::SentenceIterator {
        const std::vector<std::string>* v;
        std::size_t i = 0;
        bool done() const override { return i >= v->size(); }
        void Next() override { i++; }
        const std::string& value() const override { return (*v)[i]; }
        sentencepiece::util::Status status() const override { return {}; }
    };
    // Lines that hold a newline would be one sentence with a control character in it: split them.
    std::vector<std::string> sentences;
    for (const std::string& l : lines)
        for (std::size_t b = 0; b <= l.size();) {
            const std::size_t e = std::min(l.find('\n', b), l.size());
            if (e > b) sentences.push_back(l.substr(b, e - b));
            b = e + 1;
        }
    iterator it;
    it.v = &sentences;
    const std::unordered_map<std::string, std::string> args{{"model_type", "bpe"},
                                                            {"vocab_size", std::to_string(o.vocab_size)},
                                                            {"character_coverage", "1.0"},
                                                            {"byte_fallback", "true"},
                                                            {"split_digits", "true"},
                                                            {"normalization_rule_name", "identity"},
                                                            {"add_dummy_prefix", "true"},
                                                            {"remove_extra_whitespaces", "false"},
                                                            {"allow_whitespace_only_pieces", "true"},
                                                            {"unk_id", "0"},
                                                            {"bos_id", "1"},
                                                            {"eos_id", "2"},
                                                            {"pad_id", "-1"},
                                                            {"unk_surface", " \xE2\x81\x87 "},
                                                            {"num_threads", "1"},
                                                            {"shuffle_input_sentence", "false"},
                                                            {"input_sentence_size", "0"},
                                                            {"seed_sentencepiece_size", "1000000"},
                                                            {"hard_vocab_limit", "false"},
                                                            {"minloglevel", "2"}};
    std::string model;
    const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
    ALIGNGPT_CHECK(st.ok(), "train_llama_tokenizer: SentencePiece training failed: ", st.ToString());
    std::filesystem::create_directories(dir);
    tok_detail::write_text(dir + "/tokenizer.model", model);
    // The fields of vicuna-7b-v1.5's tokenizer_config.json that the slow LlamaTokenizer reads.
    const auto added = [](const char* content) {
        nlohmann::ordered_json t;
        t["__type"] = "AddedToken", t["content"] = content, t["lstrip"] = false, t["normalized"] = false;
        t["rstrip"] = false, t["single_word"] = false;
        return t;
    };
    nlohmann::ordered_json cfg;
    cfg["add_bos_token"] = true, cfg["add_eos_token"] = false, cfg["clean_up_tokenization_spaces"] = false;
    cfg["legacy"] = false, cfg["model_max_length"] = o.model_max_length, cfg["pad_token"] = nullptr;
    cfg["padding_side"] = "right", cfg["sp_model_kwargs"] = nlohmann::ordered_json::object();
    cfg["tokenizer_class"] = "LlamaTokenizer";
    cfg["bos_token"] = added("<s>"), cfg["eos_token"] = added("</s>"), cfg["unk_token"] = added("<unk>");
    tok_detail::write_json(dir + "/tokenizer_config.json", cfg);
    return model;
}

// ---- CLIP byte-level BPE ----------------------------------------------------------------------

struct clip_bpe {
    std::vector<std::pair<std::string, std::string>> merges;  ///< in rank order
    std::vector<std::string> vocab;                           ///< id -> token
};

/// Learns up to n_merges merges from texts (see the header); deterministic.
inline clip_bpe learn_clip_bpe(const std::vector<std::string>& texts, int n_merges) {
    ALIGNGPT_CHECK(n_merges >= 0 && std::size_t(n_merges) <= tokenizer::clip_tokenizer::max_merges,
                   "learn_clip_bpe: n_merges must be in [0, ", tokenizer::clip_tokenizer::max_merges, "], got ", n_merges);
    namespace cd = tokenizer::clip_detail;
    const auto b2u = cd::bytes_to_unicode();
    std::array<std::string, 256> byte_sym;
    for (int b = 0; b < 256; b++) cd::append_utf8(byte_sym[std::size_t(b)], b2u[std::size_t(b)]);

    std::map<std::string, std::int64_t> counts;  // piece -> frequency (ordered: a fixed word order)
    for (const std::string& t : texts) {
        const std::size_t bad = io::detail::utf8_error_at(t);
        ALIGNGPT_CHECK(bad == std::string_view::npos, "learn_clip_bpe: text is not valid UTF-8 at byte ", bad);
        for (const auto& w : cd::basic_words(cd::decode_utf8(t)))
            for (const auto& [b, e] : cd::split_pieces(w)) {
                std::string piece;
                for (std::size_t k = b; k < e; k++) cd::append_utf8(piece, w[k]);
                counts[piece]++;
            }
    }
    struct word {
        std::vector<std::string> syms;
        std::int64_t n;
    };
    std::vector<word> words;
    for (const auto& [piece, n] : counts) {
        word w{{}, n};
        for (unsigned char c : piece) w.syms.push_back(byte_sym[c]);
        if (w.syms.empty()) continue;
        w.syms.back() += "</w>";
        words.push_back(std::move(w));
    }
    clip_bpe out;
    for (int m = 0; m < n_merges; m++) {
        std::map<std::pair<std::string, std::string>, std::int64_t> pairs;
        for (const word& w : words)
            for (std::size_t k = 0; k + 1 < w.syms.size(); k++) pairs[{w.syms[k], w.syms[k + 1]}] += w.n;
        if (pairs.empty()) break;
        auto best = pairs.begin();  // the first of the most frequent: ties go to the smaller pair
        for (auto p = pairs.begin(); p != pairs.end(); ++p)
            if (p->second > best->second) best = p;
        const auto [a, b] = best->first;
        for (word& w : words) {
            std::vector<std::string> next;
            for (std::size_t k = 0; k < w.syms.size(); k++) {
                if (k + 1 < w.syms.size() && w.syms[k] == a && w.syms[k + 1] == b)
                    next.push_back(a + b), k++;
                else
                    next.push_back(w.syms[k]);
            }
            w.syms.swap(next);
        }
        out.merges.emplace_back(a, b);
    }
    for (int b = 0; b < 256; b++) out.vocab.push_back(byte_sym[std::size_t(b)]);
    for (int b = 0; b < 256; b++) out.vocab.push_back(byte_sym[std::size_t(b)] + "</w>");
    for (const auto& [a, b] : out.merges) out.vocab.push_back(a + b);
    out.vocab.push_back("<|startoftext|>");
    out.vocab.push_back("<|endoftext|>");
    return out;
}

/// Writes vocab.json, merges.txt (first line "#version: 0.2", as CLIP's) and the tokenizer's
/// tokenizer_config.json / special_tokens_map.json into dir.
inline void write_clip_tokenizer(const clip_bpe& bpe, const std::string& dir, int model_max_length = 77) {
    std::filesystem::create_directories(dir);
    nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
    for (std::size_t i = 0; i < bpe.vocab.size(); i++) vocab[bpe.vocab[i]] = i;
    ALIGNGPT_CHECK(vocab.size() == bpe.vocab.size(), "write_clip_tokenizer: the vocabulary has a token twice");
    tok_detail::write_json(dir + "/vocab.json", vocab);
    std::string merges = "#version: 0.2\n";
    for (const auto& [a, b] : bpe.merges) merges += a + " " + b + "\n";
    tok_detail::write_text(dir + "/merges.txt", merges);
    nlohmann::ordered_json cfg;
    cfg["tokenizer_class"] = "CLIPTokenizer", cfg["model_max_length"] = model_max_length, cfg["do_lower_case"] = true;
    cfg["errors"] = "replace", cfg["bos_token"] = "<|startoftext|>", cfg["eos_token"] = "<|endoftext|>";
    cfg["unk_token"] = "<|endoftext|>", cfg["pad_token"] = "<|endoftext|>";
    tok_detail::write_json(dir + "/tokenizer_config.json", cfg);
    nlohmann::ordered_json sp;
    sp["bos_token"] = "<|startoftext|>", sp["eos_token"] = "<|endoftext|>", sp["unk_token"] = "<|endoftext|>";
    sp["pad_token"] = "<|endoftext|>";
    tok_detail::write_json(dir + "/special_tokens_map.json", sp);
}

}  // namespace aligngpt::world
