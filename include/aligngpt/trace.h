#pragma once
// A trace sink: where a forward pass puts its named intermediates (docs/model.md §12.3) when the
// caller asks for them, to find where a port diverges from the reference. Models take a
// `trace_sink*` (null: nothing is kept) and put each intermediate once, in the order it is
// computed; the tensors are shared, not copied. `aligngpt trace` writes the sink to safetensors.
//
//   trace_sink<float> sink;
//   model.forward(nullptr, samples, feats, stage::inference, {}, &sink);
//   for (const auto& [name, t] : sink.entries) ...
#include <string>
#include <utility>
#include <vector>

#include "aligngpt/tensor.h"

namespace aligngpt {

template <class T = float, class Backend = backend::cpu>
struct trace_sink {
    std::vector<std::pair<std::string, tensor<T, Backend>>> entries;

    void put(std::string name, const tensor<T, Backend>& t) {
        if (t.defined()) entries.emplace_back(std::move(name), t);
    }
    /// The entry named `name` (an undefined tensor if there is none).
    tensor<T, Backend> get(const std::string& name) const {
        for (const auto& [n, t] : entries)
            if (n == name) return t;
        return {};
    }
};

}  // namespace aligngpt
