#pragma once
// Alignment levels of a LLaVA-format pre-training set from CLIP similarity (AlignGPT sec. 3.1 and
// issue #1; docs/levels.md): what `aligngpt levels` computes to make the
// "..._with_similarity_number.json" files that the reference ships precomputed.
//
//   for each record k (an image and the first "gpt" turn, the caption):
//     img_k = normalize( visual_projection( post_layernorm(CLS of the vision tower(pixels_k)) ) )
//     txt_k = normalize( text_projection( final_layer_norm(text tower(ids_k))[first argmax of ids_k] ) )
//     s_k   = img_k . txt_k                               cosine, "clip_similarity"
//   level_k = floor(rank_k * N / M)                        "similarity", 0 .. N-1
// with rank_k the position of s_k in the ascending order (a stable sort: ties keep file order), M
// records, N levels: equal-size buckets, level N-1 the most aligned. The bucketing rule is INFERRED
// (models::alignment_levels): the reference has no code for it, only the maintainer's "rank, then
// bucket" and levels 0..7.
// Pixels: CLIPImageProcessor as the CLIP directory's preprocessor_config.json says (resize the short
// side, centre crop, normalise; no pad), io::clip_preprocess in square mode. Ids: tokenizer/clip.h,
// 77 tokens (or the text tower's max_position_embeddings if fewer) with truncation. Text pooling takes
// the first position of the largest id, as transformers 4.31's CLIPTextTransformer does for any vocab
// (with CLIP's, that is the first <|endoftext|> = 49407).
//
// Output: the input records in their order and with their fields and key order (nlohmann's
// ordered_json), each with "similarity" (an integer; an existing one is replaced in place) and
// "clip_similarity" (a double) set; written atomically. Records without an image or a caption are
// errors naming the file, the record and its id. The CLIP forward runs in batches (images decoded in
// parallel, ops threaded with OpenMP); cosines do not depend on the batch size beyond f32 rounding of
// the padded text batch.
//
//   const auto data  = train::read_dataset("blip_laion_cc_sbu_558k.json");
//   const auto pairs = train::dataset_pairs(data, "blip_laion_cc_sbu_558k.json");
//   const auto clip  = train::clip_scorer<>::load("clip-vit-large-patch14-336");
//   const auto r     = train::compute_levels(clip, pairs, image_folder, {.n_levels = 8});
//   train::write_levels_json(data, r, "out.json");
//   std::cout << train::histogram_table(r.stats);
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/io/checkpoint.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/image.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/png.h"
#include "aligngpt/models/clip.h"
#include "aligngpt/ops/isa.h"
#include "aligngpt/tokenizer/clip.h"

namespace aligngpt::train {

using ordered_json = nlohmann::ordered_json;

/// One record's inputs: the image path as written in the record and the caption; `where` names the
/// record in errors ("FILE: record K (id X)").
struct caption_pair {
    std::string image, caption, where;
};

/// Reads a LLaVA-format JSON array with its key order kept; the size is checked before reading.
inline ordered_json read_dataset(const std::string& path, std::uint64_t max_bytes = std::uint64_t(16) << 30) {
    const std::string text = io::read_text_file(path, max_bytes);
    ordered_json j;
    try {
        j = ordered_json::parse(text);
    } catch (const std::exception& e) { fail(path, ": invalid JSON: ", e.what()); }
    ALIGNGPT_CHECK(j.is_array(), path, ": must be a JSON array of records, got ", j.type_name());
    ALIGNGPT_CHECK(!j.empty(), path, ": has no records");
    return j;
}

/// Each record's image and first "gpt" turn; errors read "FILE: record K (id "X"): ...".
inline std::vector<caption_pair> dataset_pairs(const ordered_json& data, const std::string& file) {
    std::vector<caption_pair> out;
    out.reserve(data.size());
    for (std::size_t k = 0; k < data.size(); k++) {
        const ordered_json& r = data[k];
        std::string where = file + ": record " + std::to_string(k);
        ALIGNGPT_CHECK(r.is_object(), where, " must be a JSON object, got ", r.type_name());
        if (const auto id = r.find("id"); id != r.end())
            where += " (id " + id->dump(-1, ' ', false, ordered_json::error_handler_t::replace).substr(0, 80) + ")";
        const auto img = r.find("image");
        ALIGNGPT_CHECK(img != r.end() && img->is_string() && !img->get_ref<const std::string&>().empty(), where,
                       ": field 'image' must be a non-empty string (text-only records have no CLIP similarity)");
        const auto conv = r.find("conversations");
        ALIGNGPT_CHECK(conv != r.end() && conv->is_array(), where, ": field 'conversations' must be an array of turns");
        const ordered_json* caption = nullptr;
        for (std::size_t t = 0; t < conv->size() && !caption; t++) {
            const ordered_json& turn = (*conv)[t];
            ALIGNGPT_CHECK(turn.is_object(), where, ": field 'conversations[", t, "]' must be an object {from, value}");
            const auto from = turn.find("from");
            // (compared as a std::string: json == const char* trips a GCC 12 -Warray-bounds false positive)
            if (from == turn.end() || !from->is_string() || from->get_ref<const std::string&>() != "gpt") continue;
            const auto v = turn.find("value");
            ALIGNGPT_CHECK(v != turn.end() && v->is_string(), where, ": field 'conversations[", t, "].value' must be a string");
            caption = &*v;
        }
        ALIGNGPT_CHECK(caption, where, ": field 'conversations' has no turn from \"gpt\" (the caption)");
        out.push_back({img->get<std::string>(), caption->get<std::string>(), where});
    }
    return out;
}

/// CLIPModel + its tokenizer and image processor, from one CLIP directory (config.json, weights,
/// vocab.json, merges.txt, optional preprocessor_config.json: without it, CLIP's mean/std at the
/// vision tower's image_size).
template <class T = float>
struct clip_scorer {
    models::clip_model<T> model;
    tokenizer::clip_tokenizer tok;
    io::clip_image_processor_config pre;
    std::size_t max_length = 77;

    static clip_scorer load(const std::string& dir, const io::load_options& opt = {}) {
        clip_scorer s;
        const auto cfg = models::clip_config::from_file(dir + "/config.json");
        s.tok = tokenizer::clip_tokenizer::from_directory(dir);
        const std::string pre_path = dir + "/preprocessor_config.json";
        std::error_code ec;
        if (std::filesystem::exists(pre_path, ec)) {
            s.pre = io::clip_image_processor_config::from_json_file(pre_path);
        } else {
            s.pre.shortest_edge = s.pre.crop_height = s.pre.crop_width = int(cfg.vision.image_size);
        }
        s.pre.aspect = io::aspect_mode::square;  // CLIP's own preprocessing: no pad
        ALIGNGPT_CHECK(s.pre.crop_height == cfg.vision.image_size && s.pre.crop_width == cfg.vision.image_size, pre_path,
                       ": crop_size ", s.pre.crop_width, "x", s.pre.crop_height, " does not match the vision tower's image_size ",
                       cfg.vision.image_size, " in ", dir, "/config.json");
        ALIGNGPT_CHECK(s.tok.max_id < cfg.text.vocab_size, dir, "/vocab.json: id ", s.tok.max_id,
                       " is outside the text tower's vocab_size ", cfg.text.vocab_size, " (config.json)");
        s.max_length = std::min<std::size_t>(77, std::size_t(cfg.text.max_position_embeddings));
        s.model = models::clip_model<T>::make(cfg);
        io::load_parameters<T>(s.model, io::tensor_source::open(dir), opt, "CLIP");
        return s;
    }

    /// Cosine of each (pixels[k], captions[k]) pair; pixels [3, S, S] each.
    std::vector<double> cosines(const std::vector<tensor<float>>& pixels, const std::vector<std::string>& captions) const {
        ALIGNGPT_CHECK(pixels.size() == captions.size() && !pixels.empty(), "clip_scorer::cosines: ", pixels.size(),
                       " images for ", captions.size(), " captions");
        const index_t B = index_t(pixels.size()), HW = index_t(pixels[0].numel());
        tensor<T> px({B, 3, index_t(pre.crop_height), index_t(pre.crop_width)});
        for (index_t b = 0; b < B; b++) {
            ALIGNGPT_CHECK(pixels[std::size_t(b)].numel() == HW, "clip_scorer::cosines: image ", b, " has another size");
            std::copy_n(pixels[std::size_t(b)].data(), HW, px.data() + b * HW);
        }
        // Captions padded with <|endoftext|> (the OpenAI tokenizer's padding) and masked: causal
        // attention and first-argmax pooling make the padding invisible to each caption.
        std::vector<std::vector<std::int64_t>> ids;
        std::size_t Tn = 0;
        for (const auto& c : captions) ids.push_back(tok.encode(c, max_length)), Tn = std::max(Tn, ids.back().size());
        std::vector<std::int64_t> flat(std::size_t(B) * Tn, tok.eos_id);
        std::vector<std::uint8_t> mask(flat.size(), 0);
        for (std::size_t b = 0; b < ids.size(); b++)
            for (std::size_t t = 0; t < ids[b].size(); t++) flat[b * Tn + t] = ids[b][t], mask[b * Tn + t] = 1;
        const auto img = model.image_embeds(nullptr, autograd::variable<T>::leaf(px)).value().to_vector();
        const auto txt = model.text_embeds(nullptr, tensor<std::int64_t>::from(flat, {B, index_t(Tn)}), mask).value().to_vector();
        const std::size_t P = img.size() / std::size_t(B);
        std::vector<double> cos(static_cast<std::size_t>(B));
        for (std::size_t b = 0; b < cos.size(); b++) {
            T dot = 0;  // f32, in index order, as (image_embeds * text_embeds).sum(-1)
            for (std::size_t i = 0; i < P; i++) dot += img[b * P + i] * txt[b * P + i];
            cos[b] = double(dot);
        }
        return cos;
    }
};

/// Per level: how many records and their cosines' min / mean / max.
struct level_stats {
    std::int64_t count = 0;
    double min = 0, mean = 0, max = 0;
};

struct levels_result {
    std::vector<double> similarity;  ///< cosine per record, file order
    std::vector<int> level;          ///< 0 .. n_levels-1 per record
    std::vector<level_stats> stats;  ///< n_levels entries
};

struct levels_options {
    int n_levels = 8;
    index_t batch_size = 8;
    std::ostream* progress = &std::cerr;  ///< one line every few seconds; nullptr: quiet
};

inline std::vector<level_stats> level_histogram(const std::vector<double>& s, const std::vector<int>& level, int n_levels) {
    std::vector<level_stats> st(static_cast<std::size_t>(n_levels));
    for (std::size_t k = 0; k < s.size(); k++) {
        level_stats& x = st[std::size_t(level[k])];
        x.min = x.count ? std::min(x.min, s[k]) : s[k];
        x.max = x.count ? std::max(x.max, s[k]) : s[k];
        x.mean += s[k];
        x.count++;
    }
    for (auto& x : st)
        if (x.count) x.mean /= double(x.count);
    return st;
}

/// Scores every pair (batches of opt.batch_size) and buckets the cosines into levels.
template <class T>
levels_result compute_levels(const clip_scorer<T>& clip, const std::vector<caption_pair>& pairs, const std::string& image_folder,
                             const levels_options& opt = {}) {
    ALIGNGPT_CHECK(opt.batch_size >= 1 && opt.n_levels >= 1, "compute_levels: batch_size ", opt.batch_size, ", n_levels ",
                   opt.n_levels);
    levels_result r;
    r.similarity.reserve(pairs.size());
    const auto t0 = std::chrono::steady_clock::now();
    auto last = t0;
    const auto seconds = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    for (std::size_t k0 = 0; k0 < pairs.size(); k0 += std::size_t(opt.batch_size)) {
        const std::size_t n = std::min(pairs.size() - k0, std::size_t(opt.batch_size));
        std::vector<tensor<float>> px(n);
        std::vector<std::string> caps(n), errors(n);
        ops::parallel_for(index_t(n), [&](index_t i) {  // decode + preprocess; errors cannot leave the region
            const std::size_t k = k0 + std::size_t(i);
            const std::string path = (std::filesystem::path(image_folder) / pairs[k].image).string();
            try {
                px[std::size_t(i)] = io::clip_preprocess(io::load_image(path), clip.pre, path);
            } catch (const std::exception& e) {
                errors[std::size_t(i)] = pairs[k].where + ": image '" + pairs[k].image + "': " + e.what();
            }
            caps[std::size_t(i)] = pairs[k].caption;
        });
        for (const auto& e : errors) ALIGNGPT_CHECK(e.empty(), e);
        try {
            for (double c : clip.cosines(px, caps)) r.similarity.push_back(c);
        } catch (const error& e) { fail(pairs[k0].where, " and the next ", n - 1, " records: ", e.what()); }
        const auto now = std::chrono::steady_clock::now();
        if (opt.progress && (seconds(last, now) >= 2 || r.similarity.size() == pairs.size())) {
            last = now;
            const double rate = double(r.similarity.size()) / std::max(1e-9, seconds(t0, now));
            char buf[160];
            std::snprintf(buf, sizeof buf, "[levels] %zu/%zu pairs, %.1f pairs/s, %.0f s left\n", r.similarity.size(),
                          pairs.size(), rate, double(pairs.size() - r.similarity.size()) / std::max(rate, 1e-9));
            *opt.progress << buf << std::flush;
        }
    }
    r.level = models::alignment_levels(r.similarity, opt.n_levels);
    r.stats = level_histogram(r.similarity, r.level, opt.n_levels);
    return r;
}

/// The records with "similarity" (level) and "clip_similarity" (cosine) set, written atomically.
inline void write_levels_json(ordered_json data, const levels_result& r, const std::string& path) {
    ALIGNGPT_CHECK(data.is_array() && data.size() == r.level.size(), path, ": ", r.level.size(), " levels for ", data.size(),
                   " records");
    for (std::size_t k = 0; k < data.size(); k++) {
        data[k]["similarity"] = r.level[k];
        data[k]["clip_similarity"] = r.similarity[k];
    }
    const std::string text = data.dump(1) + "\n";
    io::atomic_file f(path);
    f.write(text.data(), text.size());
    f.commit();
}

/// A fixed-width table: level, count, min, mean, max.
inline std::string histogram_table(const std::vector<level_stats>& st) {
    std::string out = "level      count        min       mean        max\n";
    char buf[128];
    for (std::size_t l = 0; l < st.size(); l++) {
        if (st[l].count)
            std::snprintf(buf, sizeof buf, "%5zu %10lld %10.6f %10.6f %10.6f\n", l, (long long)st[l].count, st[l].min, st[l].mean,
                          st[l].max);
        else
            std::snprintf(buf, sizeof buf, "%5zu %10d %10s %10s %10s\n", l, 0, "-", "-", "-");
        out += buf;
    }
    return out;
}

/// Histogram of the cosines as a PNG (640x360): 64 bins from the smallest to the largest cosine,
/// each bar stacked by level (blue = level 0 .. red = level N-1), grey lines at the level borders.
inline void write_histogram_png(const std::string& path, const levels_result& r) {
    constexpr int W = 640, H = 360, M = 20, bins = 64;
    std::vector<std::uint8_t> px(std::size_t(W) * H * 3, 255);
    const auto put = [&](int x, int y, std::array<std::uint8_t, 3> c) {
        if (x >= 0 && x < W && y >= 0 && y < H) std::copy(c.begin(), c.end(), px.begin() + (std::ptrdiff_t(y) * W + x) * 3);
    };
    const int N = int(r.stats.size());
    const double lo = *std::min_element(r.similarity.begin(), r.similarity.end());
    const double hi = *std::max_element(r.similarity.begin(), r.similarity.end());
    const auto bin_of = [&](double s) { return hi > lo ? std::min(bins - 1, int((s - lo) / (hi - lo) * bins)) : 0; };
    std::vector<std::vector<std::int64_t>> count(bins, std::vector<std::int64_t>(std::size_t(N), 0));
    for (std::size_t k = 0; k < r.similarity.size(); k++) count[std::size_t(bin_of(r.similarity[k]))][std::size_t(r.level[k])]++;
    std::int64_t top = 1;
    for (const auto& c : count) {
        std::int64_t t = 0;
        for (auto v : c) t += v;
        top = std::max(top, t);
    }
    const int pw = W - 2 * M, ph = H - 2 * M, bw = pw / bins;
    for (int i = 0; i < bins; i++) {
        int y = H - M;
        for (int l = 0; l < N; l++) {
            const double f = N > 1 ? double(l) / (N - 1) : 1.0;
            const std::array<std::uint8_t, 3> col{std::uint8_t(40 + 200 * f), 60, std::uint8_t(240 - 200 * f)};
            const int h = int(std::llround(double(count[std::size_t(i)][std::size_t(l)]) * ph / double(top)));
            for (int yy = y - h; yy < y; yy++)
                for (int x = M + i * bw; x < M + (i + 1) * bw - 1; x++) put(x, yy, col);
            y -= h;
        }
    }
    for (int l = 1; l < N; l++)
        if (r.stats[std::size_t(l)].count) {
            const int x = M + int((r.stats[std::size_t(l)].min - lo) / (hi > lo ? hi - lo : 1) * bins * bw);
            for (int y = M; y < H - M; y += 2) put(x, y, {128, 128, 128});
        }
    for (int x = M; x < W - M; x++) put(x, H - M, {0, 0, 0});
    for (int y = M; y <= H - M; y++) put(M - 1, y, {0, 0, 0});
    io::write_png(path, W, H, px);
}

}  // namespace aligngpt::train
