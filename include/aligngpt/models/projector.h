#pragma once
// The vision-language projector (docs/model.md §4; AlignGPT src/model/multimodal_components/
// mm_projector_builder.py, LLaVA-1.5's design, Liu et al. 2023 "Improved Baselines", sec. 3.2),
// chosen by the config string mm_projector_type:
//
//   "linear"       nn.Linear(Dv -> H)                                    keys mm_projector.{weight,bias}
//   "mlp{N}x_gelu" nn.Sequential(Linear(Dv -> H), [GELU(), Linear(H -> H)] x (N-1))
//                  keys mm_projector.{0,2,4,..,2N-2}.{weight,bias}      (GELU takes the odd indices)
//   "identity"     nn.Identity() (Dv must equal H), no parameters
// GELU is the exact erf form (nn.GELU() default). AlignGPT uses mlp2x_gelu: Linear(1024 -> H),
// GELU, Linear(H -> H), i.e. mm_projector.0.* [H, 1024] / [H] and mm_projector.2.* [H, H] / [H].
// The module sits at the top level of the checkpoint ("mm_projector.", not "model.mm_projector.").
//
// Shapes: x [..., Dv] -> [..., H] (e.g. [B, 576, 1024] -> [B, 576, 4096]).
//
//   auto proj = models::projector<float>::make("mlp2x_gelu", 1024, 4096);
//   proj.init_default(/*seed=*/1);          // or load "mm_projector.*" by name
//   auto e = proj(&tp, features);           // [B, 576, 4096]
#include <regex>
#include <string>
#include <vector>

#include "aligngpt/nn/module.h"
#include "aligngpt/ops/activations.h"

namespace aligngpt::models {

using autograd::tape;
using autograd::variable;

template <class T = float, class Backend = backend::cpu>
struct projector {
    std::string type;                             ///< the mm_projector_type it was built from
    std::vector<nn::linear<T, Backend>> linears;  ///< in order; GELU between consecutive ones

    /// Builds the projector named by mm_projector_type; an unknown type is an error naming it.
    static projector make(const std::string& type, index_t mm_hidden_size, index_t hidden_size,
                          const std::string& prefix = "mm_projector", const Backend& be = Backend::instance()) {
        ALIGNGPT_CHECK(mm_hidden_size > 0 && hidden_size > 0, "projector \"", type, "\": sizes ", mm_hidden_size, " -> ",
                       hidden_size, " must be positive");
        projector p;
        p.type = type;
        std::smatch m;
        if (type == "linear") {
            p.linears.push_back(nn::linear<T, Backend>::make(prefix, mm_hidden_size, hidden_size, true, be));
        } else if (std::regex_match(type, m, std::regex("^mlp(\\d+)x_gelu$"))) {
            const std::string digits = m[1].str();
            ALIGNGPT_CHECK(digits.size() <= 3 && std::stoi(digits) >= 1 && std::stoi(digits) <= 64, "projector: \"", type,
                           "\" asks for ", digits, " linear layers; supported 1 .. 64");
            const int N = std::stoi(digits);
            for (int i = 0; i < N; i++)
                p.linears.push_back(nn::linear<T, Backend>::make(prefix + "." + std::to_string(2 * i),
                                                                 i == 0 ? mm_hidden_size : hidden_size, hidden_size, true, be));
        } else if (type == "identity") {
            ALIGNGPT_CHECK(mm_hidden_size == hidden_size, "projector \"identity\": mm_hidden_size ", mm_hidden_size,
                           " != hidden_size ", hidden_size);
        } else {
            fail("projector: unknown mm_projector_type \"", type, "\" (expected linear, mlp<N>x_gelu, identity)");
        }
        return p;
    }

    /// PyTorch's default nn.Linear init, U(+-1/sqrt(in)) for weight and bias, through rng.h.
    void init_default(std::uint64_t seed) {
        for (auto& l : linears) l.init_default(seed);
    }

    variable<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& x) const {
        variable<T, Backend> h = x;
        for (size_t i = 0; i < linears.size(); i++) {
            if (i > 0) h = ag::gelu(tp, h);
            h = linears[i](tp, h);
        }
        return h;
    }

    template <class F>
    void visit(F&& f) {
        for (auto& l : linears) l.visit(f);
    }
};

}  // namespace aligngpt::models
