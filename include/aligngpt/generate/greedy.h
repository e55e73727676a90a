#pragma once
// The decode loop, written once: LLaMA alone (models/llama.h) and AlignGPT (models/aligngpt.h)
// both prefill with their own forward, then hand the loop a step function. Greedy as HF generate
// with do_sample=False, num_beams=1 (docs/model.md §10): the next token is the argmax of the last
// position's logits (first index on ties); decoding stops at an eos id or after max_new_tokens.
//
//   auto ids = generate::greedy(prefill_logits, [&](std::int64_t tok) { return step(tok); }, {64, eos});
//
// The logits row is copied to the host once per token: the only host transfer of a decode step.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "aligngpt/autograd/tape.h"

namespace aligngpt::generate {

struct options {
    index_t max_new_tokens = 128;
    std::vector<std::int64_t> eos{};  ///< stop ids (the token is kept); empty: run to max_new_tokens
};

/// The logits of the last position of batch row 0 of logits [B, T, V], copied to the host.
template <class T, class Backend>
std::vector<T> last_row(const autograd::variable<T, Backend>& logits) {
    ALIGNGPT_CHECK(logits.value().dim() == 3 && logits.size(2) > 0, "generate: logits ", detail::shape_str(logits.shape()),
                   " are not [B, T, V]");
    const index_t V = logits.size(2), Tn = logits.size(1);
    std::vector<T> row(static_cast<size_t>(V));
    logits.backend().to_host(row.data(), logits.value().data() + (Tn - 1) * V, V);
    return row;
}

/// Index of the largest logit of the last position of batch row 0 of logits [B, T, V].
template <class T, class Backend>
std::int64_t argmax_last(const autograd::variable<T, Backend>& logits) {
    const std::vector<T> row = last_row(logits);
    return std::int64_t(std::max_element(row.begin(), row.end()) - row.begin());  // first maximum
}

/// logits: the prefill's [1, T, V]; step(token) feeds one token and returns its logits [1, 1, V].
template <class T, class Backend, class Step>
std::vector<std::int64_t> greedy(autograd::variable<T, Backend> logits, Step&& step, const options& opt) {
    ALIGNGPT_CHECK(opt.max_new_tokens >= 0, "generate: max_new_tokens = ", opt.max_new_tokens, " is negative");
    std::vector<std::int64_t> out;
    while (index_t(out.size()) < opt.max_new_tokens) {
        out.push_back(argmax_last(logits));
        if (std::find(opt.eos.begin(), opt.eos.end(), out.back()) != opt.eos.end()) break;
        if (index_t(out.size()) == opt.max_new_tokens) break;
        logits = step(out.back());
    }
    return out;
}

}  // namespace aligngpt::generate
