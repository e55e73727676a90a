#pragma once
// Sampling, and the decode loop with streaming and stop criteria: what transformers 4.31's
// generate() does with do_sample=True (docs/model.md §10), with our own random numbers.
//
// Per token, on the last position's float32 logits, in generate()'s order:
//   1. repetition penalty  (RepetitionPenaltyLogitsProcessor, a processor: also applied when greedy)
//        for every distinct id c of the context: s_c = s_c < 0 ? s_c * r : s_c / r
//   2. temperature         (TemperatureLogitsWarper)   s = s / T
//   3. top-k               (TopKLogitsWarper)          s_i = -inf where s_i < the k-th largest (ties kept)
//   4. top-p               (TopPLogitsWarper)          sort ascending, p = softmax, c = cumsum(p);
//                                                      s_i = -inf where c_i <= 1 - top_p (the largest kept)
//   5. draw                (softmax + torch.multinomial) u = 53 random bits of rng::bits(seed,
//                          stream "generate.sample", index = tokens generated so far) in [0, 1);
//                          the token is the first i with u * sum_j w_j < sum_{j <= i} w_j,
//                          w_j = exp(s_j - max s) in double, summed in index order.
// temperature 0 means greedy (do_sample=False): the first maximum after step 1.
//
// Steps 1-3 are float32 operations as PyTorch does them, so the scores equal transformers' bit for
// bit (tests/test_sampling.cpp). Step 4's softmax and cumulative sum run in double (PyTorch: float
// softmax, cumsum accumulated in double), so a token whose cumulative probability is within a few
// ulps of 1 - top_p could be kept on one side and dropped on the other. Step 5 cannot match
// torch.multinomial's random stream; it is ours: the same seed gives the same tokens on any thread
// count and in any batch position, because the draw depends only on (seed, token index) and the
// logits do not depend on the thread count (docs/design.md "The deterministic contract").
//
// Difference from the reference: its generate() receives input_ids with the -200 image
// placeholder, and the repetition penalty's gather fails on it; here the penalty's context is the
// prompt's text ids (negative ids skipped) and the generated tokens.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "aligngpt/generate/greedy.h"
#include "aligngpt/rng.h"

namespace aligngpt::generate {

/// Sampling settings, as generate()'s (Python floats: double here, rounded where PyTorch rounds).
struct sampling {
    double temperature = 1.0;         ///< 0: greedy; the reference CLI's default is 0.2
    index_t top_k = 50;               ///< transformers' default; 0 turns it off
    double top_p = 1.0;               ///< 1 turns it off
    double repetition_penalty = 1.0;  ///< 1 turns it off
    std::uint64_t seed = 0;

    void check() const {
        ALIGNGPT_CHECK(std::isfinite(temperature) && temperature >= 0, "generate: temperature ", temperature,
                       " must be a finite number >= 0 (0 is greedy)");
        ALIGNGPT_CHECK(top_k >= 0, "generate: top_k ", top_k, " must be >= 0 (0 turns it off)");
        ALIGNGPT_CHECK(top_p >= 0 && top_p <= 1, "generate: top_p ", top_p, " must be in [0, 1]");
        ALIGNGPT_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0, "generate: repetition penalty ",
                       repetition_penalty, " must be a finite number > 0 (1 turns it off)");
    }
};

inline constexpr float filter_value = -std::numeric_limits<float>::infinity();

/// Step 1. Ids outside [0, V) (the -200 image placeholder) are skipped; a repeated id is
/// penalised once, from its original score (HF gathers all, then scatters).
inline void apply_repetition_penalty(std::span<float> scores, std::span<const std::int64_t> context, double penalty) {
    if (penalty == 1.0) return;
    const float r = float(penalty);
    std::vector<char> done(scores.size(), 0);
    for (std::int64_t c : context) {
        if (c < 0 || std::size_t(c) >= scores.size() || done[std::size_t(c)]) continue;
        done[std::size_t(c)] = 1;
        float& s = scores[std::size_t(c)];
        s = s < 0 ? s * r : s / r;
    }
}

/// Step 2.
inline void apply_temperature(std::span<float> scores, double temperature) {
    if (temperature == 1.0) return;
    const float t = float(temperature);
    for (float& s : scores) s = s / t;
}

/// Step 3 (min_tokens_to_keep 1).
inline void apply_top_k(std::span<float> scores, index_t k) {
    if (k <= 0 || scores.empty()) return;
    k = std::min<index_t>(k, index_t(scores.size()));
    std::vector<float> sorted(scores.begin(), scores.end());
    std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[std::size_t(k - 1)];
    for (float& s : scores)
        if (s < kth) s = filter_value;
}

/// Step 4 (min_tokens_to_keep 1). Ties sort by index, so the order is one fixed order.
inline void apply_top_p(std::span<float> scores, double top_p) {
    if (top_p >= 1.0 || scores.empty()) return;
    std::vector<std::size_t> order(scores.size());
    for (std::size_t i = 0; i < order.size(); i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
    const double mx = scores[order.back()];
    std::vector<double> w(order.size());
    double sum = 0;
    for (std::size_t i = 0; i < order.size(); i++) {
        const float s = scores[order[i]];
        w[i] = s == filter_value ? 0.0 : std::exp(double(s) - mx);
        sum += w[i];
    }
    const float threshold = float(1.0 - top_p);  // PyTorch compares a float tensor with the scalar as float
    double cum = 0;
    std::vector<std::size_t> removed;
    for (std::size_t i = 0; i + 1 < order.size(); i++) {  // the largest is always kept
        cum += w[i] / sum;
        if (float(cum) <= threshold) removed.push_back(order[i]);
    }
    for (std::size_t i : removed) scores[i] = filter_value;
}

/// Steps 1-4 on a copy of `logits`: the scores the draw uses.
inline std::vector<float> process(std::span<const float> logits, std::span<const std::int64_t> context, const sampling& s) {
    for (float x : logits) ALIGNGPT_CHECK(!std::isnan(x), "generate: the logits hold NaN");
    std::vector<float> scores(logits.begin(), logits.end());
    apply_repetition_penalty(scores, context, s.repetition_penalty);
    if (s.temperature == 0) return scores;  // greedy: processors only, no warpers
    apply_temperature(scores, s.temperature);
    apply_top_k(scores, s.top_k);
    apply_top_p(scores, s.top_p);
    return scores;
}

/// A uniform double in [0, 1) with 53 random bits: draw number `index` of `seed`.
inline double sample_uniform(std::uint64_t seed, std::uint64_t index) {
    static constexpr std::uint64_t stream = rng::fnv1a64("generate.sample");
    return double(rng::bits(seed, stream, index) >> 11) * 0x1p-53;
}

/// Step 5: the token drawn from softmax(scores) with uniform u in [0, 1).
inline std::int64_t draw(std::span<const float> scores, double u) {
    ALIGNGPT_CHECK(!scores.empty(), "generate: no logits to sample from");
    const float mx = *std::max_element(scores.begin(), scores.end());
    ALIGNGPT_CHECK(mx != filter_value && !std::isnan(mx), "generate: every token was filtered out or is NaN");
    std::vector<double> w(scores.size());
    double sum = 0;
    for (std::size_t i = 0; i < scores.size(); i++) {
        w[i] = scores[i] == filter_value ? 0.0 : std::exp(double(scores[i]) - double(mx));
        sum += w[i];
    }
    const double target = u * sum;
    double acc = 0;
    std::size_t last = 0;
    for (std::size_t i = 0; i < w.size(); i++) {
        if (w[i] == 0) continue;
        acc += w[i];
        last = i;
        if (target < acc) return std::int64_t(i);
    }
    return std::int64_t(last);  // u * sum rounded up to the total: the last possible token
}

/// The next token after `logits` (the last position's row): greedy when temperature is 0.
/// `index` is the number of tokens generated before this one (the draw's counter).
inline std::int64_t next_token(std::span<const float> logits, std::span<const std::int64_t> context, const sampling& s,
                               std::uint64_t index) {
    const std::vector<float> scores = process(logits, context, s);
    if (s.temperature == 0)
        return std::int64_t(std::max_element(scores.begin(), scores.end()) - scores.begin());  // first maximum
    return draw(scores, sample_uniform(s.seed, index));
}

/// The decode loop with sampling. logits: the prefill's [1, T, V]; step(token) returns the next
/// [1, 1, V]; context: the prompt ids for the repetition penalty. on_token(token, generated) is
/// called after each token (streaming) and returns false to stop after it (a stop string). Stops
/// after an eos id (kept) or max_new_tokens.
template <class T, class Backend, class Step, class OnToken>
std::vector<std::int64_t> sample(autograd::variable<T, Backend> logits, Step&& step, const options& opt, const sampling& s,
                                 std::vector<std::int64_t> context, OnToken&& on_token) {
    ALIGNGPT_CHECK(opt.max_new_tokens >= 0, "generate: max_new_tokens = ", opt.max_new_tokens, " is negative");
    s.check();
    std::vector<std::int64_t> out;
    while (index_t(out.size()) < opt.max_new_tokens) {
        const std::vector<T> row = last_row(logits);
        const std::vector<float> rowf(row.begin(), row.end());
        out.push_back(next_token(rowf, context, s, out.size()));
        context.push_back(out.back());
        const bool go_on = on_token(out.back(), std::span<const std::int64_t>(out));
        if (!go_on || std::find(opt.eos.begin(), opt.eos.end(), out.back()) != opt.eos.end()) break;
        if (index_t(out.size()) == opt.max_new_tokens) break;
        logits = step(out.back());
    }
    return out;
}

/// KeywordsStoppingCriteria of the reference's mm_utils.py, for any tokenizer with
/// encode(text) and decode(ids, skip_special_tokens): stop when the sequence (prompt + generated)
/// ends with a keyword's ids (BOS dropped), or when the decoded last min(generated, longest
/// keyword) tokens contain the keyword.
template <class Tokenizer>
class keywords_stop {
public:
    keywords_stop(const Tokenizer& tok, std::vector<std::string> keywords, std::vector<std::int64_t> prompt)
        : tok_(&tok), keywords_(std::move(keywords)), prompt_(std::move(prompt)) {
        for (const std::string& k : keywords_) {
            std::vector<std::int64_t> ids = tok.encode(k);
            if (ids.size() > 1 && ids[0] == tok.bos_id()) ids.erase(ids.begin());
            max_len_ = std::max(max_len_, ids.size());
            ids_.push_back(std::move(ids));
        }
    }
    /// true: stop after the last generated token.
    bool operator()(std::span<const std::int64_t> generated) const {
        const auto at = [&](std::size_t from_end) {  // the sequence prompt + generated, from its end
            return from_end < generated.size() ? generated[generated.size() - 1 - from_end]
                                               : prompt_[prompt_.size() - 1 - (from_end - generated.size())];
        };
        const std::size_t total = prompt_.size() + generated.size();
        for (const auto& k : ids_) {
            if (k.empty() || k.size() > total) continue;
            bool match = true;
            for (std::size_t i = 0; i < k.size() && match; i++) match = at(i) == k[k.size() - 1 - i];
            if (match) return true;
        }
        const std::size_t n = std::min(generated.size(), max_len_);
        if (n == 0) return false;
        const std::string text = tok_->decode(generated.subspan(generated.size() - n), true);
        for (const std::string& k : keywords_)
            if (text.find(k) != std::string::npos) return true;
        return false;
    }

private:
    const Tokenizer* tok_;
    std::vector<std::string> keywords_;
    std::vector<std::int64_t> prompt_;
    std::vector<std::vector<std::int64_t>> ids_;
    std::size_t max_len_ = 0;
};

}  // namespace aligngpt::generate
