// 03: a tiny AlignGPT end to end, no downloads: picture -> CLIP preprocessing -> ViT (336/14,
// 576 patches) -> projector -> alignment indicator -> LLaMA. A plumbing demo, not a model: every
// weight is random (seeded), so the token ids mean nothing; the numbers are the point: a stage-1
// loss and its gradients (only the indicator row of the sample's alignment level learns), the
// gate's mix of the 7 local levels, greedy decoding running.
//   build/examples/example_03_tiny_aligngpt
#include <cmath>
#include <cstdio>

#include "aligngpt/io/image.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip_vision.h"

using namespace aligngpt;
using namespace aligngpt::models;

int main() {
    std::printf(
        "A plumbing demo, not a model: tiny widths and random (seeded) weights, so the token ids below\n"
        "mean nothing. It shows the data flowing: picture -> CLIP -> projector -> indicator -> LLaMA.\n");
    // A 400x300 picture: a colour ramp with a dark disc (expand2square pads it to 400x400).
    io::rgb_image img(400, 300);
    for (int y = 0; y < img.height; y++)
        for (int x = 0; x < img.width; x++) {
            const bool disc = (x - 250) * (x - 250) + (y - 140) * (y - 140) < 60 * 60;
            std::uint8_t* p = img.row(y) + 3 * x;
            p[0] = disc ? 20 : std::uint8_t(x * 255 / 399), p[1] = disc ? 20 : std::uint8_t(y * 255 / 299), p[2] = 128;
        }
    const tensor<float> pixels = io::clip_preprocess(img, io::clip_image_processor_config{}, "synthetic");
    auto px = autograd::variable<float>::leaf(pixels.reshape({1, 3, 336, 336}));

    clip_vision_config vcfg;  // ViT-L/14-336 geometry, tiny width: 24x24 = 576 patches
    vcfg.image_size = 336, vcfg.patch_size = 14, vcfg.hidden_size = 32, vcfg.intermediate_size = 64;
    vcfg.num_hidden_layers = 3, vcfg.num_attention_heads = 4;
    auto vit = clip_vision_model<float>::make(vcfg);
    vit.visit([](auto& p) {
        if (p.name().find("layer_norm") == std::string::npos && p.name().find("layrnorm") == std::string::npos)
            nn::init_uniform(p, 7, 0.05f);
    });

    aligngpt_config cfg;
    cfg.mm_hidden_size = 32;
    cfg.llm.hidden_size = 64, cfg.llm.intermediate_size = 128, cfg.llm.num_hidden_layers = 2;
    cfg.llm.num_attention_heads = cfg.llm.num_key_value_heads = 4, cfg.llm.vocab_size = 256;
    aligngpt_model<float> model(cfg);
    model.llm.init(1), model.mm_projector.init_default(2), model.align_indicators.init(3), model.gated_weight.init(4);

    // Stage 1 (alignment pre-training): "<image>" + caption + "\n", alignment level 5 of 0..7.
    sample s1{{1, image_token_index, 40, 41, 42, 43, 13}, {ignore_index, ignore_index, 40, 41, 42, 43, 13}, 5};
    model.set_trainable_for(stage::pretrain);
    autograd::tape<float> tp;
    auto out = model.forward_pixels(&tp, {s1}, vit, px, stage::pretrain);
    tp.backward(out.loss);
    std::printf("stage 1: sequence %lld (BOS, indicator, 576 image tokens, 5 caption tokens), loss %.6f (ln 256 = %.6f)\n",
                (long long)out.batch.S, out.loss.value().data()[0], std::log(256.0));
    const auto& dE = model.align_indicators.indicator_embs.grad();
    for (int level = 0; level < 8; level++) {
        double n2 = 0;
        for (index_t h = 0; h < 64; h++) n2 += double(dE.data()[level * 64 + h]) * dE.data()[level * 64 + h];
        std::printf("  |d loss / d indicator[%d]| = %.3e%s\n", level, std::sqrt(n2),
                    level == 5 ? "   <- the sample's level" : "");
    }

    // Inference: the gate mixes the 7 local levels from image-text agreement; level 7 (global) is always added.
    sample q{{1, 20, 21, image_token_index, 22, 23, 24}, {}, -1};
    auto feats = vit.features(nullptr, px);
    auto inf = model.forward(nullptr, {q}, feats, stage::inference);
    std::printf("inference: gate weights over levels 0..6:");
    for (int j = 0; j < 7; j++) std::printf(" %.4f", inf.gate.weights.value().data()[j]);
    const auto ids = model.generate(q, feats, {12});
    std::printf("\ngreedy continuation (12 token ids; random weights, so not words):");
    for (auto id : ids) std::printf(" %lld", (long long)id);
    std::printf("\n");
    return 0;
}
