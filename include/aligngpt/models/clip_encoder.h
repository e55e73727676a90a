#pragma once
// One CLIP transformer block (transformers 4.31 CLIPEncoderLayer; Radford et al. 2021, sec. 2.4,
// the pre-LN ViT block of Dosovitskiy et al. 2021, eq. 2-3), shared by the vision and text towers.
//
//   A  = layer_norm1(X)
//   X' = X + out_proj( attention( q_proj(A), k_proj(A), v_proj(A) ) )     scale HS^-0.5, NH heads
//   Y  = X' + fc2( act( fc1( layer_norm2(X') ) ) )                          act = quick_gelu (or gelu)
//
// The vision tower uses no mask; the text tower is causal with a key padding mask. HF multiplies
// q_proj's output by the scale before q.k; ag::attention multiplies the score (exact for the
// power-of-two 64^-0.5 of ViT-L/14, one rounding apart otherwise).
//
// Shapes: X, Y [B, T, C]; q/k/v [B, T, C] with C = NH*HS; fc1 [I, C], fc2 [C, I].
// Parameter names (HF, verbatim): "<prefix>self_attn.{k,v,q,out}_proj.{weight,bias}",
// "<prefix>layer_norm1.*", "<prefix>mlp.fc1.*", "<prefix>mlp.fc2.*", "<prefix>layer_norm2.*",
// prefix e.g. "vision_model.encoder.layers.3.".
//
//   auto layer = models::clip_encoder_layer<float>::make("vision_model.encoder.layers.0.", 1024, 4096, 16);
//   auto y = layer(&tp, x, {});              // x [B, 577, 1024] -> y [B, 577, 1024]
#include <string>

#include "aligngpt/nn/module.h"
#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/attention.h"
#include "aligngpt/ops/elementwise.h"

namespace aligngpt::models {

using autograd::tape;
using autograd::variable;

template <class T = float, class Backend = backend::cpu>
struct clip_encoder_layer {
    nn::linear<T, Backend> k_proj, v_proj, q_proj, out_proj;  ///< self_attn.*  [C, C] + [C]
    nn::layer_norm<T, Backend> layer_norm1;                   ///< [C]
    nn::linear<T, Backend> fc1, fc2;                          ///< mlp.fc1 [I, C], mlp.fc2 [C, I]
    nn::layer_norm<T, Backend> layer_norm2;                   ///< [C]
    int n_head = 1;
    bool quick_gelu = true;  ///< false: exact-erf gelu

    static clip_encoder_layer make(const std::string& prefix, index_t C, index_t I, int n_head, T eps = T(1e-5),
                                   const std::string& act = "quick_gelu", const Backend& be = Backend::instance()) {
        ALIGNGPT_CHECK(n_head > 0 && C % n_head == 0, "clip_encoder_layer ", prefix, ": width ", C, " is not divisible by ",
                       n_head, " heads");
        ALIGNGPT_CHECK(act == "quick_gelu" || act == "gelu", "clip_encoder_layer ", prefix, ": hidden_act \"", act,
                       "\" is not supported (quick_gelu, gelu)");
        clip_encoder_layer l;
        l.k_proj = nn::linear<T, Backend>::make(prefix + "self_attn.k_proj", C, C, true, be);
        l.v_proj = nn::linear<T, Backend>::make(prefix + "self_attn.v_proj", C, C, true, be);
        l.q_proj = nn::linear<T, Backend>::make(prefix + "self_attn.q_proj", C, C, true, be);
        l.out_proj = nn::linear<T, Backend>::make(prefix + "self_attn.out_proj", C, C, true, be);
        l.layer_norm1 = nn::layer_norm<T, Backend>::make(prefix + "layer_norm1", C, eps, be);
        l.fc1 = nn::linear<T, Backend>::make(prefix + "mlp.fc1", C, I, true, be);
        l.fc2 = nn::linear<T, Backend>::make(prefix + "mlp.fc2", I, C, true, be);
        l.layer_norm2 = nn::layer_norm<T, Backend>::make(prefix + "layer_norm2", C, eps, be);
        l.n_head = n_head;
        l.quick_gelu = act == "quick_gelu";
        return l;
    }

    /// x [B, T, C] -> [B, T, C]. `mask` carries causal / key padding; n_head and scale are set here.
    variable<T, Backend> operator()(tape<T, Backend>* tp, const variable<T, Backend>& x, ops::attention_options mask) const {
        mask.n_head = n_head;
        mask.n_kv_head = 0;
        mask.scale = 0;  // HS^-0.5
        const variable<T, Backend> a = layer_norm1(tp, x);
        // One recording call per statement: C++ leaves argument evaluation order unspecified, and
        // the tape order (hence the order gradients accumulate into `a`) must not depend on the compiler.
        const variable<T, Backend> q = q_proj(tp, a);
        const variable<T, Backend> k = k_proj(tp, a);
        const variable<T, Backend> v = v_proj(tp, a);
        const variable<T, Backend> o = ag::attention(tp, q, k, v, mask);
        const variable<T, Backend> h = ag::add(tp, x, out_proj(tp, o));
        const variable<T, Backend> m = fc1(tp, layer_norm2(tp, h));
        const variable<T, Backend> g = quick_gelu ? ag::quick_gelu(tp, m) : ag::gelu(tp, m);
        return ag::add(tp, h, fc2(tp, g));
    }

    /// Parameters in the order of the HF state dict.
    template <class F>
    void visit(F&& f) {
        k_proj.visit(f), v_proj.visit(f), q_proj.visit(f), out_proj.visit(f);
        layer_norm1.visit(f);
        fc1.visit(f), fc2.visit(f);
        layer_norm2.visit(f);
    }
};

}  // namespace aligngpt::models
