// train/data.h against the official src/utils/dataset.py (LazySupervisedDataset, preprocess_plain,
// preprocess_v1, DataCollatorForSupervisedDataset) and aligngpt_trainer.py's
// get_modality_length_grouped_indices, run unpatched by tests/tools/golden/train_data.py on
// tests/golden/train_data/{stage1,stage2}.json with the tiny tokenizer of tests/golden/tokenizer.
// Tolerances: ids, labels, lengths, mismatch flags and sample orders are integers: exact.
// Pixels: PNG records exactly (0: the CLIP pipeline of io/image.h is bit-exact with transformers on
// Pillow-equal decodes, tests/test_image.cpp), the JPEG record to 0.045 (stb_image vs libjpeg-turbo
// decode, up to 3 levels = 0.0438 after normalisation, test_image.cpp; measured here: 0.015).
#if defined(ALIGNGPT_TEST_HAVE_TOKENIZER) && defined(ALIGNGPT_TEST_HAVE_STB)
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "aligngpt/train/data.h"
#include "support/golden.h"
#include "support/scratch_dir.h"

namespace test_train_data {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;

const std::string kGolden = ALIGNGPT_GOLDEN_DIR;
const std::string kDir = kGolden + "/train_data";
const std::string kImages = kGolden + "/images";

const tokenizer::llama_tokenizer& tok() {
    static const auto t = tokenizer::llama_tokenizer::from_directory(kGolden + "/tokenizer");
    return t;
}
io::clip_image_processor_config image_cfg() {
    return io::clip_image_processor_config::from_json_file(kDir + "/preprocessor_config.json");
}

train::dataset stage1() { return {kDir + "/stage1.json", kImages, tok(), "plain", io::aspect_mode::square, image_cfg(), 2048}; }
train::dataset stage2(std::int64_t max_len) {
    return {kDir + "/stage2.json", kImages, tok(), "vicuna_v1", io::aspect_mode::pad, image_cfg(), max_len};
}

const golden::fixture& fx() {
    static const golden::fixture f = golden::load("train_data/train_data");
    return f;
}
std::vector<std::int64_t> ints(const std::string& key) { return fx().get<std::int64_t>(key); }

/// A scratch file under support::scratch_dir().
std::string scratch(const std::string& name, const std::string& text) {
    const fs::path d = fs::path(support::scratch_dir()) / "train_data";
    fs::create_directories(d);
    const std::string p = (d / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
}

void check_set(const std::string& key, const train::dataset& ds, std::int64_t max_len) {
    for (std::size_t i = 0; i < ds.size(); i++) {
        const std::string k = key + "." + std::to_string(i);
        CAPTURE(k);
        const auto ids = ints(k + ".input_ids"), labels = ints(k + ".labels");
        // Before the collator: LazySupervisedDataset[i] exactly.
        const auto p = ds.prepare(i);
        CHECK(p.enc.ids == ids);
        CHECK(p.enc.labels == labels);
        CHECK(p.enc.mismatch == (ints(k + ".mismatch")[0] == 1));
        CHECK(ds.length(i) == ints(k + ".length")[0]);
        CHECK(ds.is_image(i) == fx().has(k + ".pixels"));
        // After it: cut to model_max_length, id 0 dropped with its label (the model's attention mask).
        const train::example ex = ds.get(i);
        std::vector<std::int64_t> want_ids, want_labels;
        for (std::size_t t = 0; t < ids.size() && std::int64_t(t) < max_len; t++)
            if (ids[t] != 0) want_ids.push_back(ids[t]), want_labels.push_back(labels[t]);
        CHECK(ex.sample.ids == want_ids);
        CHECK(ex.sample.labels == want_labels);
        CHECK(ex.mismatch == p.enc.mismatch);
        if (fx().has(k + ".pixels")) {
            const auto want = fx().get<float>(k + ".pixels");
            REQUIRE(ex.pixels.defined());
            CHECK(ex.pixels.shape() == fx().shape(k + ".pixels"));
            const std::vector<float> got(ex.pixels.data(), ex.pixels.data() + ex.pixels.numel());
            const bool jpeg = ds.read(i).image->ends_with(".jpg");
            CHECK(golden::max_abs_diff(got, want) <= (jpeg ? 0.045 : 0.0));
        } else {
            CHECK(!ex.pixels.defined());
        }
    }
}

}  // namespace

TEST_CASE("train data: stage 1 (plain, square images, levels) equals the reference dataset") {
    const auto ds = stage1();
    REQUIRE(ds.size() == 4);
    check_set("stage1", ds, 2048);
    CHECK(ds.get(0).sample.level == 3);
    CHECK(ds.get(2).sample.level == 7);
    CHECK(ds.get(2).id == "s1-2");
    CHECK(ds.get(3).id == "17");  // a numeric id, as text
    // "<image>" moved to the front; the human text is dropped; no EOS target; newline (13) is one.
    const auto s = ds.get(0).sample;
    CHECK(s.ids[1] == models::image_token_index);
    CHECK(s.labels[0] == models::ignore_index);
    CHECK(s.labels[1] == models::ignore_index);
    CHECK(s.labels.back() == 13);
}

TEST_CASE("train data: stage 2 (vicuna_v1, padded images) equals the reference dataset, with and without truncation") {
    const auto ds = stage2(2048);
    REQUIRE(ds.size() == 11);
    check_set("stage2", ds, 2048);
    const auto short_ds = stage2(64);
    check_set("stage2_short", short_ds, 64);
    // Record 2, "3 boats": the lone "▁" before the digit is a target, as in the reference.
    const auto p = ds.prepare(2);
    const auto first =
        std::find_if(p.enc.labels.begin(), p.enc.labels.end(), [](std::int64_t l) { return l != models::ignore_index; });
    REQUIRE(first != p.enc.labels.end());
    CHECK(tok().decode(std::vector<std::int64_t>{*first}) == "");  // "▁" alone decodes to nothing (the leading space is dropped)
    CHECK(p.enc.labels.back() == tok().eos_id());
    // Record 8: " ASSISTANT: " inside the question: the reference masks all and warns.
    CHECK(ds.get(8).mismatch);
    CHECK(!ds.get(0).mismatch);
    // Record 9 holds a literal <unk> (id 0): dropped from the sample with its label.
    CHECK(std::count(p.enc.ids.begin(), p.enc.ids.end(), 0) == 0);
    const auto r9 = ds.prepare(9);
    CHECK(std::count(r9.enc.ids.begin(), r9.enc.ids.end(), 0) >= 1);
    const auto s9 = ds.get(9).sample;
    CHECK(std::count(s9.ids.begin(), s9.ids.end(), 0) == 0);
    CHECK(s9.ids.size() < r9.enc.ids.size());
    CHECK(s9.level == -1);  // stage 2 takes its indicator from the gate: "similarity" is not used
}

TEST_CASE("train data: samples equal the reference collator's batches after its attention mask") {
    const auto ds = stage2(64);
    for (int k = 0; fx().has("batch." + std::to_string(k) + ".records"); k++) {
        const std::string b = "batch." + std::to_string(k);
        CAPTURE(b);
        const auto recs = ints(b + ".records");
        const auto ids = ints(b + ".input_ids"), labels = ints(b + ".labels"), mask = ints(b + ".attention_mask");
        const std::size_t S = std::size_t(fx().dim(b + ".input_ids", 1));
        CHECK(S <= 64);
        for (std::size_t r = 0; r < recs.size(); r++) {
            std::vector<std::int64_t> want_ids, want_labels;
            for (std::size_t t = 0; t < S; t++)
                if (mask[r * S + t]) want_ids.push_back(ids[r * S + t]), want_labels.push_back(labels[r * S + t]);
            const auto s = ds.get(std::size_t(recs[r])).sample;
            CHECK(s.ids == want_ids);
            CHECK(s.labels == want_labels);
        }
        // And the model side accepts them as they are.
        std::vector<models::sample> batch;
        for (std::int64_t i : recs) batch.push_back(ds.get(std::size_t(i)).sample);
        const auto prepared = models::prepare_batch(batch, 64, 4);
        CHECK(prepared.B == index_t(recs.size()));
    }
}

TEST_CASE("train data: the index finds each record's bytes without parsing the file") {
    const auto ds = stage2(2048);
    const auto& ix = ds.index();
    for (std::size_t i = 0; i < ix.size(); i++) {
        const std::string raw = ix.raw(i);
        CHECK(raw.front() == '{');
        CHECK(raw.back() == '}');
        CHECK(nlohmann::json::parse(raw).is_object());
    }
    CHECK(ds.read(9).similarity == 2);  // unknown fields ("source") are ignored
    // Strings holding brackets, quotes and escapes do not confuse the scanner.
    const std::string p = scratch(
        "tricky.json",
        R"( [ {"id": "a]}\"[{", "conversations": [{"from": "human", "value": "x \\\" ] } y"}, {"from": "gpt", "value": "z"}]},
      {"conversations": [{"from": "human", "value": "\u005d\n"}, {"from": "gpt", "value": "ok"}], "image": "a.png"} ]
    )");
    const auto t = train::record_index::scan(p);
    REQUIRE(t.size() == 2);
    CHECK(t.entry(0).words == 6);  // x, \", ], }, y and z
    CHECK(!t.entry(0).has_image);
    CHECK(t.entry(1).has_image);
    CHECK(t.entry(1).words == 2);  // "]" and "ok"
    CHECK(train::record_index::scan(scratch("empty.json", "[\n]\n")).size() == 0);
}

TEST_CASE("train data: epoch order is the documented seeded Fisher-Yates") {
    const std::size_t n = 10;
    const auto p = train::epoch_order(n, 42, 3);
    // Re-derived from the comment in data.h.
    std::vector<std::size_t> q(n);
    for (std::size_t i = 0; i < n; i++) q[i] = i;
    const std::uint64_t k = rng::bits(42, rng::fnv1a64("aligngpt.train.epoch_order"), 3);
    for (std::size_t i = n - 1; i >= 1; i--) {
        const auto j = std::size_t((static_cast<rng::uint128>(rng::bits(k, 0, i)) * (i + 1)) >> 64);
        std::swap(q[i], q[j]);
    }
    CHECK(p == q);
    std::vector<std::size_t> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < n; i++) CHECK(sorted[i] == i);
    CHECK(train::epoch_order(n, 42, 3) == p);
    CHECK(train::epoch_order(n, 42, 4) != p);
    CHECK(train::epoch_order(n, 43, 3) != p);
    CHECK(train::epoch_order(0, 1, 0).empty());
    CHECK(train::epoch_order(1, 1, 0) == std::vector<std::size_t>{0});
}

TEST_CASE("train data: modality-grouped order equals the reference's grouping given its permutations") {
    for (int k = 0; fx().has("sampler." + std::to_string(k) + ".out"); k++) {
        const std::string c = "sampler." + std::to_string(k);
        CAPTURE(c);
        const auto lengths = ints(c + ".lengths"), bw = ints(c + ".batch_world");
        const auto to_idx = [](const std::vector<std::int64_t>& v) { return std::vector<std::size_t>(v.begin(), v.end()); };
        const auto img = to_idx(ints(c + ".perm_image")), txt = to_idx(ints(c + ".perm_text")),
                   mb = to_idx(ints(c + ".perm_batches"));
        const auto got = train::modality_grouped_order(lengths, std::size_t(bw[0]), std::size_t(bw[1]),
                                                       [&](std::size_t, train::order_draw what) {
                                                           switch (what) {
                                                               case train::order_draw::image_samples: return img;
                                                               case train::order_draw::text_samples: return txt;
                                                               default: return mb;
                                                           }
                                                       });
        CHECK(got == to_idx(ints(c + ".out")));
    }
}

TEST_CASE("train data: modality-grouped order with our permutations keeps the reference's invariants") {
    std::vector<std::int64_t> lengths;
    for (int i = 0; i < 203; i++) lengths.push_back(((i * 37) % 41 + 1) * (i % 4 == 0 ? -1 : 1));
    const std::size_t B = 4, W = 2, M = B * W;
    const auto o = train::modality_grouped_order(lengths, B, W, 7, 0);
    std::vector<std::size_t> sorted = o;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < lengths.size(); i++) REQUIRE(sorted[i] == i);
    // Full megabatches come first, each of one modality; the merged leftovers come last, sorted by index.
    const std::size_t n_img = std::size_t(std::count_if(lengths.begin(), lengths.end(), [](auto l) { return l > 0; }));
    const std::size_t tail = (n_img % M ? n_img % M : M) + ((lengths.size() - n_img) % M ? (lengths.size() - n_img) % M : M);
    const std::size_t head = o.size() - tail;
    CHECK(head % M == 0);
    for (std::size_t s = 0; s < head; s += M) {
        const bool image = lengths[o[s]] > 0;
        std::int64_t sum[2] = {0, 0};
        for (std::size_t k = s; k < s + M; k++) {
            CHECK((lengths[o[k]] > 0) == image);
            sum[(k - s) / B] += std::abs(lengths[o[k]]);
        }
        // split_to_even_chunks keeps the ranks' totals within one longest sample of each other
        CHECK(std::abs(sum[0] - sum[1]) <= 41);
    }
    CHECK(std::is_sorted(o.begin() + std::ptrdiff_t(head), o.end()));
    CHECK(train::modality_grouped_order(lengths, B, W, 7, 0) == o);
    CHECK(train::modality_grouped_order(lengths, B, W, 8, 0) != o);
    CHECK(train::modality_grouped_order(lengths, B, W, 7, 1) != o);
    // World size 1: each megabatch sorted longest first.
    const auto o1 = train::modality_grouped_order(lengths, B, 1, 7, 0);
    for (std::size_t s = 0; s + B <= o1.size() - 8; s += B)
        for (std::size_t k = s + 1; k < s + B; k++) CHECK(std::abs(lengths[o1[k - 1]]) >= std::abs(lengths[o1[k]]));
    CHECK_THROWS_WITH_AS(train::modality_grouped_order({3, 0, -2}, 2, 1, 1, 0), doctest::Contains("record 1 has length 0"),
                         aligngpt::error);
}

// --- bad input: each names the file, the record, its byte offset and the field ----------------

namespace {

const std::string kOk =
    R"({"id": "a", "image": "square_336.png", "similarity": 1, "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]})";

void expect_scan_error(const std::string& name, const std::string& text, const std::string& msg,
                       const train::data_limits& lim = {}) {
    const std::string p = scratch(name, text);
    CAPTURE(name);
    CHECK_THROWS_WITH_AS(train::record_index::scan(p, lim), doctest::Contains(msg.c_str()), aligngpt::error);
}

void expect_get_error(const std::string& name, const std::string& text, const std::string& tmpl, const std::string& msg) {
    const std::string p = scratch(name, text);
    CAPTURE(name);
    CHECK_THROWS_WITH_AS(
        {
            train::dataset ds(p, kImages, tok(), tmpl, io::aspect_mode::square, image_cfg(), 64);
            for (std::size_t i = 0; i < ds.size(); i++) (void)ds.get(i);
        },
        doctest::Contains(msg.c_str()), aligngpt::error);
}

}  // namespace

TEST_CASE("train data: bad files are refused with the record, its byte and the field") {
    expect_scan_error("trunc.json", "[" + kOk + ",\n" + kOk.substr(0, 40),
                      "record 1 (byte " + std::to_string(kOk.size() + 3) + "): not closed");
    expect_scan_error("trunc2.json", "[" + kOk, "the array is not closed");
    expect_scan_error("nothing.json", "", "empty file");
    expect_scan_error("notarray.json", "{\"a\": 1}", "must be a JSON array");
    expect_scan_error("notobj.json", "[" + kOk + ", 5]",
                      "record 1 (byte " + std::to_string(kOk.size() + 3) + "): must be a JSON object");
    expect_scan_error("garbage.json", "[" + kOk + "] x", "unexpected \"x\" after the end");
    expect_scan_error("missingcomma.json", "[" + kOk + " " + kOk + "]", "expected ',' or ']' after record 0");
    expect_scan_error("badjson.json", "[{\"a\": tru}]", "record 0 (byte 1): invalid JSON");
    // 10^6 levels of nesting: counted, not recursed; refused at the depth bound.
    expect_scan_error("deep.json", "[{\"a\": " + std::string(1000000, '[') + std::string(1000000, ']') + "}]",
                      "record 0 (byte 1): nested deeper than 64 levels");
    // A 2 MB string with a 1 MiB record bound: refused once the record passes the bound.
    train::data_limits small;
    small.max_record_bytes = 1 << 20;
    expect_scan_error("huge.json", "[" + kOk + ",{\"id\": \"" + std::string(2 << 20, 'x') + "\"}]",
                      "record 1 (byte " + std::to_string(kOk.size() + 2) + "): longer than the limit of 1048576 bytes", small);

    expect_get_error("noconv.json", "[" + kOk + ", {\"image\": \"x.png\", \"similarity\": 0}]", "plain",
                     "record 1 (byte " + std::to_string(kOk.size() + 3) +
                         "): \"conversations\": expected an array of turns, but it is missing");
    expect_get_error(
        "from.json",
        R"([{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}, {"from": "bot", "value": "B"}]}])",
        "vicuna_v1", R"(record 0 (byte 1): "conversations"[2]."from": expected "human" or "gpt", got "bot")");
    expect_get_error("value.json", R"([{"conversations": [{"from": "human", "value": 3}]}])", "vicuna_v1",
                     R"("conversations"[0]."value": expected a string, got 3)");
    expect_get_error("alternate.json",
                     R"([{"conversations": [{"from": "human", "value": "Q"}, {"from": "human", "value": "A"}]}])", "vicuna_v1",
                     R"("conversations"[1]."from": expected "gpt" (turns alternate, starting with human), got "human")");
    expect_get_error(
        "level_str.json",
        R"([{"image": "square_336.png", "similarity": "3", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A"}]}])",
        "plain", "record 0 (byte 1): \"similarity\": stage 1 needs a level in [0, 8), got a value that is not an integer");
    expect_get_error(
        "level_range.json", "[" + kOk + R"(, {"image": "square_336.png", "similarity": 8, "conversations": []}])", "plain",
        "record 1 (byte " + std::to_string(kOk.size() + 3) + "): \"similarity\": stage 1 needs a level in [0, 8), got 8");
    expect_get_error("level_missing.json", R"([{"image": "square_336.png", "conversations": []}])", "plain",
                     "\"similarity\": stage 1 needs a level in [0, 8), but it is missing");
    expect_get_error("noimage1.json", R"([{"similarity": 2, "conversations": []}])", "plain",
                     "\"image\": stage 1 (plain) needs an image");
    expect_get_error(
        "noimage.json",
        R"([{"image": "no/such.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A"}]}])",
        "vicuna_v1", "record 0 (byte 1): \"image\" \"no/such.png\": ");
    expect_get_error("imagenull.json", R"([{"image": null, "conversations": [{"from": "human", "value": "Q"}]}])", "vicuna_v1",
                     "\"image\": expected a relative path, got null");
    expect_get_error("empty_conv.json", R"([{"conversations": []}])", "vicuna_v1",
                     "\"conversations\": expected a non-empty array of turns, got []");
    expect_get_error(
        "plain3.json",
        R"([{"image": "square_336.png", "similarity": 1, "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A"}, {"from": "human", "value": "B"}]}])",
        "plain", "the plain template takes 2 turns, got 3");
    CHECK_THROWS_WITH_AS(train::dataset(scratch("ok.json", "[]"), kImages, tok(), "llava", io::aspect_mode::pad, image_cfg(), 64),
                         doctest::Contains("unknown template \"llava\""), aligngpt::error);
    // An empty array is a dataset of 0 records (the trainer refuses to train on it).
    CHECK(train::dataset(scratch("ok.json", "[]"), kImages, tok(), "vicuna_v1", io::aspect_mode::pad, image_cfg(), 64).size() ==
          0);
}

}  // namespace test_train_data
#endif  // ALIGNGPT_TEST_HAVE_TOKENIZER && ALIGNGPT_TEST_HAVE_STB
