// 04: the README's example. Load a published AlignGPT directory (sharded .bin or safetensors) and
// its CLIP vision tower, encode an image, run prompt ids, read logits and the gate, and decode.
//   build/examples/example_04_load_and_run MODEL_DIR VISION_TOWER_DIR IMAGE ID [ID ...]   (-200 = the image)
//   e.g. ... aligngpt-7b clip-vit-large-patch14-336 cat.jpg 1 319 -200 29871 13
// (tests/golden/model_dirs holds a tiny directory of the same layout: aligngpt_st + clip_vision;
// examples/CMakeLists.txt runs this program on it.) Exit status: 0 ok, 1 runtime error, 2 bad input.
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <vector>

#include "aligngpt/aligngpt.h"

using namespace aligngpt;

// The whole argument must be a base-10 integer: std::strtoll would read "abc" as 0 and "7x" as 7.
static std::optional<std::int64_t> parse_id(const char* s) {
    std::int64_t v = 0;
    const char* end = s + std::strlen(s);
    const auto r = std::from_chars(s, end, v, 10);
    if (r.ec != std::errc() || r.ptr != end || end == s) return std::nullopt;
    return v;
}

int main(int argc, char** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s MODEL_DIR VISION_TOWER_DIR IMAGE ID [ID ...]   (-200 = the image)\n", argv[0]);
        return 2;
    }
    // Ids are parsed before the load, so a typo costs no model load. ID k counts from 1.
    const int n = argc - 4;
    std::vector<std::int64_t> ids;
    for (int k = 1; k <= n; k++) {
        const auto id = parse_id(argv[3 + k]);
        if (!id) {
            std::fprintf(stderr, "error: ID %d of %d, \"%s\", is not an integer\n", k, n, argv[3 + k]);
            return 2;
        }
        ids.push_back(*id);
    }
    try {
        pretrained::load_options opt;
        opt.vision_tower = argv[2];
        opt.dtype = io::weights_dtype::bf16;  // frozen LLM linears stay 16-bit: a 7B model fits in < 16 GiB
        auto m = pretrained::load_aligngpt(argv[1], opt);

        const index_t V = m.config.model.llm.vocab_size;
        for (int k = 1; k <= n; k++) {
            const std::int64_t id = ids[size_t(k - 1)];
            if (id != models::image_token_index && (id < 0 || id >= V)) {
                std::fprintf(stderr, "error: ID %d of %d, %lld, is outside the vocabulary [0, %lld) (-200 marks the image)\n", k,
                             n, (long long)id, (long long)V);
                return 2;
            }
        }

        io::clip_image_processor_config pc;            // CLIP defaults, aspect "pad" as AlignGPT
        const index_t S = m.vision_config.image_size;  // 336 for ViT-L/14-336
        pc.shortest_edge = pc.crop_height = pc.crop_width = int(S);
        tensor<float> px = io::clip_preprocess(io::load_image(argv[3]), pc, argv[3]);
        auto pixels = autograd::variable<float>::leaf(px.reshape({1, 3, S, S}));
        auto feats = m.vision->features(nullptr, pixels);  // CLIP hidden_states[-2], patch tokens [1, 576, Dv]

        auto out = m.model->forward(nullptr, {models::sample{ids}}, feats, models::stage::inference);
        // out.logits [1, sequence, vocab]; out.gate.weights [1, 7] (the gate's mix of levels 0..6)
        std::printf("logits [%lld, %lld, %lld]; gate weights:", (long long)out.logits.size(0), (long long)out.logits.size(1),
                    (long long)out.logits.size(2));
        for (index_t j = 0; out.gate.weights.defined() && j < out.gate.weights.value().numel(); j++)
            std::printf(" %.4f", out.gate.weights.value().data()[j]);
        std::printf("\ngreedy ids:");
        for (auto id : m.model->generate(models::sample{ids}, feats, {16})) std::printf(" %lld", (long long)id);
        std::printf("\n");
    } catch (const std::exception& e) {  // aligngpt::error names the file and the field; also bad_alloc
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
