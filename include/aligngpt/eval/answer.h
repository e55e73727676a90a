#pragma once
// `aligngpt answer`: a LLaVA evaluation question file to an answers file, as the reference's
// src/eval/model_vqa_loader.py (and model_vqa.py) do it, batched and resumable (docs/eval.md).
//
//   question JSONL {question_id, image, text, ...}  ->  answers JSONL, one line per question:
//   {"question_id": <as given>, "prompt": <text>, "text": <answer>, "answer_id": ..., "model_id": ..., "metadata": {}}
//
// Per question: "<image>\n" + text as the user turn of the conversation template, the empty
// assistant turn, tokenizer_image_token; the image from image_folder/image (the caller's loader,
// `pad` or `square` per config); generation; the answer is decode(skip_special_tokens).strip()
// without a trailing stop string (model_vqa.py; for vicuna_v1 the stop string is EOS, so this is
// model_vqa_loader.py's answer too). Lines are written as Python's json.dumps writes them.
// Differences: answer_id is not shortuuid's random id but a function of (seed, question_id,
// occurrence) in shortuuid's alphabet, so that the file is the same bit for bit on every run.
//
// Batching (generate_batch): B prompts go through one padded prefill (models::prepare_batch pads
// right) and batched decode steps: row b decodes at position len_b + step into cache slot S + step,
// and its key mask hides the padding slots len_b .. S-1. Every kernel is one fixed fma chain per
// output and a masked key adds an exact zero (ops/attention.h), so each row's tokens equal the
// row's answer alone, bit for bit. A finished row keeps being fed (its logits are ignored) until
// the whole batch is done.
//
// Resume: the answers file's complete lines are kept (each must parse and name a question of the
// question file), a torn last line (no '\n': a killed write) is cut off, and questions already
// answered are skipped; a question_id that repeats (MME) counts occurrences. Each answer is one
// write of a whole line, then fflush; fsync after each batch.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/conversation.h"
#include "aligngpt/eval/score.h"
#include "aligngpt/generate/sampling.h"
#include "aligngpt/io/json.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/rng.h"
#include "aligngpt/tokenizer/llama.h"

namespace aligngpt::eval {

/// One question of a question file.
struct question {
    nlohmann::json id;  ///< question_id as given (written back unchanged)
    std::string key;    ///< question_id as a string key (eval::question_id: 5 and "5" are one id)
    std::string image, text;
    std::string where;  ///< "FILE:LINE"
};

inline constexpr std::size_t max_question_line_bytes = std::size_t(16) << 20;

namespace detail {

/// Calls f(line, line_number, complete) for each line of `path`, reading 64 KiB blocks; a line
/// over max_line bytes is refused (no unbounded allocation). `complete` is false for a last line
/// without '\n'.
template <class F>
void for_each_line(const std::string& path, std::size_t max_line, F&& f) {
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (!fp) fail(path, ": cannot open: ", io::detail::errno_text(errno));
    struct closer {
        std::FILE* f;
        ~closer() { std::fclose(f); }
    } guard{fp};
    std::vector<char> buf(std::size_t(1) << 16);
    std::string line;
    std::size_t number = 1;
    for (;;) {
        const std::size_t n = std::fread(buf.data(), 1, buf.size(), fp);
        if (n == 0) {
            if (std::ferror(fp)) fail(path, ": read error: ", io::detail::errno_text(errno));
            break;
        }
        std::size_t i = 0;
        while (i < n) {
            const char* nl = static_cast<const char*>(std::memchr(buf.data() + i, '\n', n - i));
            const std::size_t j = nl ? std::size_t(nl - buf.data()) : n;
            ALIGNGPT_CHECK(line.size() + (j - i) <= max_line, path, ":", number, ": line longer than ", max_line, " bytes");
            line.append(buf.data() + i, j - i);
            i = j;
            if (nl) {
                f(std::string_view(line), number++, true);
                line.clear();
                i++;
            }
        }
    }
    if (!line.empty()) f(std::string_view(line), number, false);
}

/// Python's json.dumps(s) (ensure_ascii): a \u escape with four hex digits for everything outside printable ASCII.
inline std::string py_json(const nlohmann::json& j) {
    return j.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
}

}  // namespace detail

/// Reads a question file line by line: each non-blank line a JSON object with question_id (string
/// or integer), image (a non-empty string) and text (a string); errors name the file, line, field.
inline std::vector<question> read_questions(const std::string& path) {
    std::vector<question> out;
    detail::for_each_line(path, max_question_line_bytes, [&](std::string_view l, std::size_t line, bool) {
        if (eval::detail::py_strip(l).empty()) return;
        const std::string where = path + ":" + std::to_string(line);
        const nlohmann::json v = io::parse_json(l, where, {.max_bytes = max_question_line_bytes, .max_depth = 64});
        ALIGNGPT_CHECK(v.is_object(), where, ": each line must be a JSON object, got ", io::detail::json_text(v));
        const io::json_reader r(v, where, io::json_nulls::refused);
        question q;
        q.key = question_id(v, where);  // names the field when it is missing or not an id
        q.id = v["question_id"], q.where = where;
        q.image = r.string("image", std::nullopt);
        if (q.image.empty()) r.must_be("image", "a non-empty file name (relative to --image-folder)");
        q.text = r.string("text", std::nullopt);
        out.push_back(std::move(q));
    });
    ALIGNGPT_CHECK(!out.empty(), path, ": no questions (the file is empty)");
    return out;
}

/// The reference's get_model_name_from_path: the last path component, or "<parent>_<last>" when
/// the last one starts with "checkpoint-".
inline std::string model_name_from_path(std::string path) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    const auto cut = [](const std::string& p) {
        const auto s = p.rfind('/');
        return s == std::string::npos ? p : p.substr(s + 1);
    };
    const std::string last = cut(path);
    if (last.rfind("checkpoint-", 0) != 0) return last;
    const auto s = path.rfind('/');
    return (s == std::string::npos ? std::string() : cut(path.substr(0, s))) + "_" + last;
}

/// A 22-character id in shortuuid's alphabet from (seed, question key, occurrence): reproducible,
/// unlike shortuuid.uuid(), and distinct for distinct questions (128 bits).
inline std::string answer_id(std::uint64_t seed, const std::string& key, std::size_t occurrence) {
    static constexpr std::string_view alphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    const std::uint64_t stream = rng::fnv1a64("answer.id") ^ rng::fnv1a64(key);
    std::uint64_t hi = rng::bits(seed, stream, 2 * occurrence), lo = rng::bits(seed, stream, 2 * occurrence + 1);
    std::string s;
    for (int i = 0; i < 22; i++) {  // (hi, lo) divided by 57, digit by digit
        const rng::uint128 v = (static_cast<rng::uint128>(hi) << 64) | lo;
        s += alphabet[std::size_t(v % 57)];
        const rng::uint128 q = v / 57;
        hi = std::uint64_t(q >> 64), lo = std::uint64_t(q);
    }
    return s;
}

/// One answers line as model_vqa_loader.py's json.dumps writes it, with the '\n'.
inline std::string answer_line(const question& q, std::string_view text, std::string_view answer_id, std::string_view model_id) {
    using detail::py_json;
    return "{\"question_id\": " + py_json(q.id) + ", \"prompt\": " + py_json(q.text) +
           ", \"text\": " + py_json(std::string(text)) + ", \"answer_id\": " + py_json(std::string(answer_id)) +
           ", \"model_id\": " + py_json(std::string(model_id)) + ", \"metadata\": {}}\n";
}

/// The reference's answer from the generated ids: decode(skip_special_tokens).strip(), a trailing
/// stop string removed, strip() again.
inline std::string final_answer(const tokenizer::llama_tokenizer& tok, std::span<const std::int64_t> generated,
                                const std::string& stop) {
    std::string out = tokenizer::strip(tok.decode(generated, true));
    if (!stop.empty() && out.ends_with(stop)) out.resize(out.size() - stop.size());
    return tokenizer::strip(out);
}

/// What an existing answers file holds for `questions`.
struct resume_state {
    std::vector<char> done;   ///< per question: answered by a kept line
    std::size_t kept = 0;     ///< complete lines kept
    std::uint64_t bytes = 0;  ///< length of the kept prefix
    bool torn = false;        ///< a last line without '\n' was found (it is cut off)
};

/// Scans `path` (absent: nothing answered). Each complete non-blank line must parse as an answer
/// of one of the questions not yet answered; the k-th answer of an id answers the k-th question
/// with that id (MME repeats ids). Errors name the file and the line.
inline resume_state scan_answers(const std::string& path, const std::vector<question>& questions) {
    resume_state st;
    st.done.assign(questions.size(), 0);
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return st;
    std::map<std::string, std::vector<std::size_t>> by_key;                                  // question indices, in file order
    for (std::size_t k = questions.size(); k-- > 0;) by_key[questions[k].key].push_back(k);  // back() = first
    detail::for_each_line(path, max_question_line_bytes, [&](std::string_view l, std::size_t line, bool complete) {
        if (!complete) {
            st.torn = true;
            return;
        }
        const std::string where = path + ":" + std::to_string(line);
        st.bytes += l.size() + 1;
        if (eval::detail::py_strip(l).empty()) return;
        nlohmann::json v;
        try {
            v = io::parse_json(l, where, {.max_bytes = max_question_line_bytes, .max_depth = 64});
        } catch (const error& e) {
            fail(e.what(), " (a complete line that is not an answer: not written by aligngpt answer? refusing to resume)");
        }
        ALIGNGPT_CHECK(v.is_object(), where, ": an answer line must be a JSON object, got ", io::detail::json_text(v));
        const std::string key = question_id(v, where);
        (void)io::json_reader(v, where, io::json_nulls::refused).string("text", std::nullopt);
        auto it = by_key.find(key);
        ALIGNGPT_CHECK(
            it != by_key.end() && !it->second.empty(), where, ": question_id ", io::detail::quote_name(key),
            it == by_key.end() ? " is not in the question file" : " is answered more often than the question file asks it",
            " (another run's answers file? refusing to resume)");
        st.done[it->second.back()] = 1;
        it->second.pop_back();
        st.kept++;
    });
    return st;
}

/// Appends whole lines to an answers file: one fwrite per line, then fflush, so that a killed run
/// leaves at most one torn last line (which scan_answers cuts off).
class answers_writer {
public:
    /// keep_bytes: the prefix to keep (resume), 0 = a new file.
    answers_writer(const std::string& path, std::uint64_t keep_bytes) : path_(path) {
        fp_ = std::fopen(path.c_str(), keep_bytes ? "r+b" : "wb");
        if (!fp_) fail(path, ": cannot open for writing: ", io::detail::errno_text(errno));
        if (keep_bytes && ::ftruncate(::fileno(fp_), off_t(keep_bytes)) != 0)
            fail(path, ": cannot cut off the torn last line: ", io::detail::errno_text(errno));
        if (std::fseek(fp_, 0, SEEK_END) != 0) fail(path, ": seek failed: ", io::detail::errno_text(errno));
    }
    answers_writer(const answers_writer&) = delete;
    answers_writer& operator=(const answers_writer&) = delete;
    ~answers_writer() {
        if (fp_) std::fclose(fp_);
    }
    void write(const std::string& line) {
        if (std::fwrite(line.data(), 1, line.size(), fp_) != line.size() || std::fflush(fp_) != 0)
            fail(path_, ": write failed: ", io::detail::errno_text(errno));
    }
    /// fsync: the answers written so far survive a crash of the machine too.
    void sync() {
        if (::fsync(::fileno(fp_)) != 0) fail(path_, ": fsync failed: ", io::detail::errno_text(errno));
    }

private:
    std::string path_;
    std::FILE* fp_ = nullptr;
};

/// Batched generation: prompts[b] (ids with one -200) with image_features [B, P, Dv] (row b's
/// image); each row is decoded as models::aligngpt_model::generate_sampled decodes it alone (same
/// tokens, see the file comment). stop(b, generated) returns true to stop row b after its last
/// token (a stop string); rows also stop at an eos id or max_new_tokens.
template <class T, class Backend, class Stop>
std::vector<std::vector<std::int64_t>> generate_batch(const models::aligngpt_model<T, Backend>& m,
                                                      const std::vector<std::vector<std::int64_t>>& prompts,
                                                      const autograd::variable<T, Backend>& image_features, generate::options opt,
                                                      const generate::sampling& s, Stop&& stop, models::alignment al = {}) {
    ALIGNGPT_CHECK(opt.max_new_tokens >= 0, "generate: max_new_tokens = ", opt.max_new_tokens, " is negative");
    s.check();
    if (opt.eos.empty()) opt.eos = m.config.llm.eos_token_ids;
    std::vector<models::sample> samples;
    for (const auto& p : prompts) samples.push_back(models::sample{p});
    const index_t B = index_t(samples.size()), V = m.config.llm.vocab_size, H = m.config.llm.hidden_size;
    std::vector<std::vector<std::int64_t>> out(static_cast<std::size_t>(B));
    if (B == 0 || opt.max_new_tokens == 0) return out;

    models::kv_cache<T, Backend> cache;
    {
        const auto plan = models::prepare_batch(samples, m.config.tokenizer_model_max_length, m.config.n_image_tokens);
        cache.reserve(plan.S + opt.max_new_tokens);
    }
    const auto pre = m.forward(nullptr, samples, image_features, models::stage::inference, al, nullptr, &cache);
    const index_t S = pre.batch.S;
    std::vector<index_t> len(std::size_t(B), 0);  // real positions of each row (the mask is a prefix)
    for (index_t b = 0; b < B; b++)
        for (index_t t = 0; t < S; t++) len[std::size_t(b)] += pre.batch.mask[std::size_t(b * S + t)];

    std::vector<std::vector<std::int64_t>> context = prompts;  // the repetition penalty's
    std::vector<char> active(std::size_t(B), 1);
    std::vector<T> rows(std::size_t(B * V));
    for (index_t b = 0; b < B; b++)  // each row's last real position
        m.backend().to_host(rows.data() + b * V, pre.logits.value().data() + (b * S + len[std::size_t(b)] - 1) * V, V);
    std::vector<std::int64_t> feed(std::size_t(B), 0);
    for (index_t step = 0;; step++) {
        bool any = false;
        for (index_t b = 0; b < B; b++) {
            if (!active[std::size_t(b)]) continue;
            auto& g = out[std::size_t(b)];
            const std::vector<float> rowf(rows.begin() + b * V, rows.begin() + (b + 1) * V);
            g.push_back(generate::next_token(rowf, context[std::size_t(b)], s, g.size()));
            context[std::size_t(b)].push_back(g.back());
            feed[std::size_t(b)] = g.back();
            const bool eos = std::find(opt.eos.begin(), opt.eos.end(), g.back()) != opt.eos.end();
            if (stop(b, std::span<const std::int64_t>(g)) || eos || index_t(g.size()) == opt.max_new_tokens)
                active[std::size_t(b)] = 0;
            any = any || active[std::size_t(b)];
        }
        if (!any) break;
        // one decode step for every row: row b's token at position len_b + step, cache slot S + step
        const index_t past = cache.length();
        std::vector<std::int64_t> pos(static_cast<std::size_t>(B));
        std::vector<std::uint8_t> mask(std::size_t(B * (past + 1)), 0);
        for (index_t b = 0; b < B; b++) {
            pos[std::size_t(b)] = len[std::size_t(b)] + step;
            for (index_t j = 0; j <= past; j++) mask[std::size_t(b * (past + 1) + j)] = j < len[std::size_t(b)] || j >= S;
        }
        const auto e = ag::reshape<T, Backend>(nullptr, m.llm.embed(nullptr, feed), {B, 1, H});
        const auto logits = m.llm.forward(nullptr, e, pos, mask, &cache).logits;  // [B, 1, V]
        m.backend().to_host(rows.data(), logits.value().data(), B * V);
    }
    return out;
}

/// Settings of answer_questions (the CLI's flags).
struct answer_options {
    std::string image_folder, conv_mode = "vicuna_v1", model_id;
    index_t max_new_tokens = 128;                   ///< model_vqa_loader.py's default
    generate::sampling sampling{.temperature = 0};  ///< the evaluation scripts pass --temperature 0
    models::alignment align{};
    index_t batch_size = 1;
    bool resume = false;
    std::ostream* progress = nullptr;  ///< done/total, answers/s, ETA per batch
};

struct answer_summary {
    std::size_t questions = 0, resumed = 0, answered = 0;
    bool torn = false;  ///< resume cut off a torn last line
};

/// Answers every question of `question_file` into `answers_file`. load_pixels(path) -> [1, 3, S, S]
/// (the tower's preprocessing, `pad` or `square` per config). Every question and image path is
/// checked before the first generation; the answers file is scanned (resume) or started empty.
template <class T, class Backend, class Tower, class LoadPixels>
answer_summary answer_questions(const models::aligngpt_model<T, Backend>& m, const Tower& tower,
                                const tokenizer::llama_tokenizer& tok, const std::string& question_file,
                                const std::string& answers_file, const answer_options& o, LoadPixels&& load_pixels) {
    namespace fs = std::filesystem;
    ALIGNGPT_CHECK(o.batch_size >= 1, "answer: batch size ", o.batch_size, " must be >= 1");
    const std::vector<question> qs = read_questions(question_file);
    const auto image_path = [&](const question& q) { return (fs::path(o.image_folder) / q.image).string(); };
    for (const question& q : qs) {
        std::error_code ec;
        const std::string p = image_path(q);
        ALIGNGPT_CHECK(fs::is_regular_file(p, ec), q.where, ": image \"", q.image, "\": no such file ",
                       io::detail::quote_name(p));
    }
    answer_summary sum;
    sum.questions = qs.size();
    const resume_state st = o.resume ? scan_answers(answers_file, qs) : resume_state{std::vector<char>(qs.size(), 0)};
    sum.resumed = st.kept, sum.torn = st.torn;
    std::vector<std::size_t> todo;
    std::map<std::string, std::size_t> occurrence;  // k-th question with an id (answer_id)
    std::vector<std::size_t> occ(qs.size());
    for (std::size_t k = 0; k < qs.size(); k++) {
        occ[k] = occurrence[qs[k].key]++;
        if (!st.done[k]) todo.push_back(k);
    }
    const conversation::conversation tmpl = conversation::make(o.conv_mode);
    const std::string stop = tmpl.stop_string();
    const index_t limit = m.config.tokenizer_model_max_length;
    const auto prompt_of = [&](const question& q) {
        auto conv = tmpl;
        conv.append(conv.roles[0], "<image>\n" + q.text);
        conv.append(conv.roles[1], std::nullopt);
        std::vector<std::int64_t> ids = tokenizer::tokenizer_image_token(tok, conv.prompt());
        const auto n_ph = std::count(ids.begin(), ids.end(), models::image_token_index);
        ALIGNGPT_CHECK(n_ph == 1, q.where, ": text: the prompt holds ", n_ph,
                       " image placeholders; the model takes one (is \"<image>\" in the text?)");
        const index_t spliced = index_t(ids.size()) - 1 + m.config.n_image_tokens + 1;
        ALIGNGPT_CHECK(limit <= 0 || spliced <= limit, q.where, ": text: the prompt is ", spliced,
                       " positions with the image, more than the model's context of ", limit,
                       " (config tokenizer_model_max_length)");
        return ids;
    };
    for (std::size_t k : todo) (void)prompt_of(qs[k]);  // every prompt checked before the first answer (tokenized again below)
    answers_writer w(answers_file, st.bytes);
    if (o.progress)
        *o.progress << "[answer] " << qs.size() << " questions, " << st.kept << " already answered"
                    << (st.torn ? " (a torn last line was cut off)" : "") << ", " << todo.size() << " to go, batch "
                    << o.batch_size << "\n";
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t first = 0; first < todo.size(); first += std::size_t(o.batch_size)) {
        const std::size_t n = std::min(todo.size() - first, std::size_t(o.batch_size));
        std::vector<std::vector<std::int64_t>> ids;
        std::vector<tensor<T, Backend>> pixels;
        for (std::size_t i = 0; i < n; i++) {
            const question& q = qs[todo[first + i]];
            ids.push_back(prompt_of(q));
            pixels.push_back(load_pixels(image_path(q)));
        }
        std::vector<autograd::variable<T, Backend>> px;
        for (auto& p : pixels) px.push_back(autograd::variable<T, Backend>::leaf(p));
        const auto feats = tower.features(nullptr, ag::concat<T, Backend>(nullptr, px, 0));
        std::vector<generate::keywords_stop<tokenizer::llama_tokenizer>> stops;
        for (const auto& p : ids) stops.emplace_back(tok, std::vector<std::string>{stop}, p);
        const auto gen = generate_batch(
            m, ids, feats, generate::options{o.max_new_tokens, {}}, o.sampling,
            [&](index_t b, std::span<const std::int64_t> g) { return stops[std::size_t(b)](g); }, o.align);
        for (std::size_t i = 0; i < n; i++) {
            const std::size_t k = todo[first + i];
            w.write(
                answer_line(qs[k], final_answer(tok, gen[i], stop), answer_id(o.sampling.seed, qs[k].key, occ[k]), o.model_id));
        }
        w.sync();
        sum.answered += n;
        if (o.progress) {
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double rate = secs > 0 ? double(sum.answered) / secs : 0;
            const double eta = rate > 0 ? double(todo.size() - sum.answered) / rate : 0;
            char line[256];
            std::snprintf(line, sizeof line, "[answer] %zu/%zu done, %.2f answers/s, ETA %.0f s\n", st.kept + sum.answered,
                          qs.size(), rate, eta);
            *o.progress << line << std::flush;
        }
    }
    return sum;
}

}  // namespace aligngpt::eval
