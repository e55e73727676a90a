// 04: the README's example. Load a published AlignGPT directory (sharded .bin or safetensors) and
// its CLIP vision tower, encode an image, run prompt ids, read logits and the gate, and decode.
//   build/examples/example_04_load_and_run MODEL_DIR VISION_TOWER_DIR IMAGE [ids, with -200 for the image]
//   e.g. ... aligngpt-7b clip-vit-large-patch14-336 cat.jpg 1 319 -200 29871 13
// (tests/golden/model_dirs holds a tiny directory of the same layout: aligngpt_st + clip_vision.)
#include <cstdio>
#include <cstdlib>

#include "aligngpt/aligngpt.h"

using namespace aligngpt;

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s MODEL_DIR VISION_TOWER_DIR IMAGE ID [ID ...]\n", argv[0]);
        return 2;
    }
    try {
        pretrained::load_options opt;
        opt.vision_tower = argv[2];
        opt.dtype = io::weights_dtype::bf16;  // frozen LLM linears stay 16-bit: a 7B model fits in < 16 GiB
        auto m = pretrained::load_aligngpt(argv[1], opt);

        io::clip_image_processor_config pc;  // openai/clip-vit-large-patch14-336 defaults, aspect "pad"
        const int S = int(m.vision_config.image_size);  // 336 for ViT-L/14-336 (smaller in tiny test towers)
        pc.shortest_edge = pc.crop_height = pc.crop_width = S;
        tensor<float> px = io::clip_preprocess(io::load_image(argv[3]), pc, argv[3]);
        auto pixels = autograd::variable<float>::leaf(px.reshape({1, 3, S, S}));
        auto feats = m.vision->features(nullptr, pixels);  // hidden_states[-2], patch tokens [1, 576, Dv]

        std::vector<std::int64_t> ids;
        for (int i = 4; i < argc; i++) ids.push_back(std::strtoll(argv[i], nullptr, 10));
        auto out = m.model->forward(nullptr, {models::sample{ids}}, feats, models::stage::inference);
        std::printf("logits [%lld, %lld, %lld]; gate weights:", (long long)out.logits.size(0),
                    (long long)out.logits.size(1), (long long)out.logits.size(2));
        for (index_t j = 0; out.gate.weights.defined() && j < out.gate.weights.value().numel(); j++)
            std::printf(" %.4f", out.gate.weights.value().data()[j]);
        std::printf("\ngreedy ids:");
        for (auto id : m.model->generate(models::sample{ids}, feats, {16})) std::printf(" %lld", (long long)id);
        std::printf("\n");
    } catch (const aligngpt::error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
