// io/checkpoint.h: strict by-name loading, all-or-nothing; aligngpt/pretrained.h: AlignGPT model directories
// (fixtures: tests/golden/model_dirs, made by tests/tools/golden/models_dir.py).
#include <doctest/doctest.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "aligngpt/io/checkpoint.h"
#include "aligngpt/pretrained.h"
#include "support/golden.h"
#include "support/scratch_dir.h"

namespace test_loader {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;
using var = autograd::variable<float>;

const std::string dirs = std::string(ALIGNGPT_GOLDEN_DIR) + "/model_dirs";
const std::string bin_dir = dirs + "/aligngpt_bin", st_dir = dirs + "/aligngpt_st", clip_dir = dirs + "/clip_vision";
const std::string pretrain_dir = dirs + "/aligngpt_pretrain", stage1 = pretrain_dir + "/mm_projector_align.bin";

pretrained::load_options quiet(std::string vision = clip_dir) {
    pretrained::load_options o;
    o.quiet = true;
    o.vision_tower = std::move(vision);
    return o;
}

/// A fresh empty directory under the test tmp dir.
std::string tmp_dir(const std::string& name) {
    const std::string d = support::scratch_dir() + "/loader_" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) { return e.what(); }
    return {};
}

/// name -> values of every parameter of a module.
template <class M>
std::map<std::string, std::vector<float>> params_of(M& m) {
    std::map<std::string, std::vector<float>> out;
    m.visit([&](var& p) { out[p.name()] = p.value().to_vector(); });
    return out;
}

/// The tensor `key` of a source, widened to f32.
std::vector<float> source_values(const io::tensor_source& s, const std::string& key) {
    const auto* e = s.find(key);
    REQUIRE_MESSAGE(e, "no tensor " << key << " in " << s.description());
    std::vector<float> v(std::size_t(e->info->numel()));
    e->file->read(*e->info, v.data());
    return v;
}

/// Copies every tensor of `src` (raw bytes) into a writer, letting `edit` drop or change entries.
struct raw_tensor {
    std::string name;
    io::dtype type;
    std::vector<index_t> shape;
    std::vector<std::byte> bytes;
};
void write_copy(const io::tensor_source& src, const std::string& path, const std::function<bool(raw_tensor&)>& edit,
                const std::vector<raw_tensor>& extra = {}) {
    io::safetensors_writer w;
    for (const auto& [k, e] : src.entries()) {
        raw_tensor t{k, e.info->type, e.info->shape, {}};
        t.bytes.assign(e.file->data(*e.info), e.file->data(*e.info) + e.info->nbytes());
        if (!edit(t)) continue;
        w.add(t.name, t.type, t.shape, t.bytes.data(), t.bytes.size());
    }
    for (const auto& t : extra) w.add(t.name, t.type, t.shape, t.bytes.data(), t.bytes.size());
    w.write(path);
}

}  // namespace

TEST_CASE("loader: glob patterns and the LLM-linear predicate") {
    CHECK(io::glob_match("*.rotary_emb.inv_freq", "model.layers.0.self_attn.rotary_emb.inv_freq"));
    CHECK(io::glob_match("vision_tower.vision_tower.*", "vision_tower.vision_tower.vision_model.pre_layrnorm.bias"));
    CHECK(io::glob_match("*", ""));
    CHECK_FALSE(io::glob_match("*.position_ids", "position_ids"));
    CHECK_FALSE(io::glob_match("a*b", "a.c"));
    CHECK(pretrained::is_llm_linear_weight("model.layers.31.mlp.down_proj.weight"));
    CHECK(pretrained::is_llm_linear_weight("lm_head.weight"));
    CHECK_FALSE(pretrained::is_llm_linear_weight("model.embed_tokens.weight"));
    CHECK_FALSE(pretrained::is_llm_linear_weight("vision_model.encoder.layers.0.self_attn.q_proj.weight"));
    CHECK_FALSE(pretrained::is_llm_linear_weight("mm_projector.0.weight"));
}

TEST_CASE("loader: the sharded .bin and the sharded safetensors copies give bit-identical parameters") {
    auto a = pretrained::load_aligngpt(bin_dir, quiet());
    auto b = pretrained::load_aligngpt(st_dir, quiet());
    const auto pa = params_of(*a.model), pb = params_of(*b.model);
    REQUIRE(pa.size() == pb.size());
    CHECK(pa.size() == 2 + 2 * 9 + 1 + 4 + 1 + 4);  // embed, lm_head, 2 layers, norm, projector, indicators, gate
    for (const auto& kv : pa) {
        const std::string& name = kv.first;
        const auto& v = kv.second;
        INFO(name);
        REQUIRE(pb.count(name));
        CHECK(golden::fnv1a(v) == golden::fnv1a(pb.at(name)));
    }
    const auto va = params_of(*a.vision), vb = params_of(*b.vision);
    CHECK(va == vb);

    // the values are the checkpoint's bf16 numbers widened exactly
    const auto src = io::tensor_source::open(st_dir);
    CHECK(src.find("model.embed_tokens.weight")->info->type == io::dtype::BF16);
    CHECK(pa.at("model.embed_tokens.weight") == source_values(src, "model.embed_tokens.weight"));
    CHECK(pa.at("gated_weight_layer.mlp.0.weight") == source_values(src, "gated_weight_layer.mlp.0.weight"));

    // the vision tower comes from clip_vision/ (fp32), NOT from the bf16 copy inside the checkpoint
    const auto clip = io::tensor_source::open(clip_dir);
    const std::string key = "vision_model.embeddings.class_embedding";
    CHECK(va.at(key) == source_values(clip, key));
    CHECK(va.at(key) != source_values(src, "vision_tower.vision_tower." + key));
    CHECK(a.vision_dir == clip_dir);
    CHECK(a.config.image_aspect_ratio == "pad");
    CHECK(a.config.mm_vision_select_layer == -2);
    CHECK(a.stats.tensors == pa.size() + va.size());
}

TEST_CASE("loader: missing, unexpected, wrong-shape and wrong-dtype tensors are listed by name in one error") {
    const std::string d = tmp_dir("strict");
    fs::copy_file(st_dir + "/config.json", d + "/config.json");
    const auto src = io::tensor_source::open(st_dir);
    write_copy(src, d + "/model.safetensors",
               [](raw_tensor& t) {
                   if (t.name == "model.norm.weight") return false;  // missing
                   if (t.name == "mm_projector.2.bias") {            // wrong shape: [63] instead of [64]
                       t.shape = {63};
                       t.bytes.resize(63 * 2);
                   }
                   if (t.name == "align_indicators.indicator_embs") t.type = io::dtype::I16;  // wrong dtype (same bytes)
                   return true;
               },
               {raw_tensor{"model.extra_head.weight", io::dtype::F32, {2}, std::vector<std::byte>(8)}});  // unexpected

    const auto cfg = pretrained::aligngpt_dir_config::load(d + "/config.json");
    models::aligngpt_model<float> m(cfg.model);
    // sentinels: a failed load must leave every parameter as it was (R5)
    m.llm.layers[0].up_proj.weight.value().fill(7.0f);
    m.mm_projector.linears[0].weight.value().fill(-3.0f);
    const auto before = params_of(m);

    auto o = quiet();
    o.ignore.push_back("vision_tower.vision_tower.*");  // the CLIP copy, which only load_aligngpt skips by default
    const std::string msg = message_of([&] { io::load_parameters(m, io::tensor_source::open(d), o); });
    INFO(msg);
    CHECK(msg.find("4 problems") != std::string::npos);
    CHECK(msg.find("nothing was loaded") != std::string::npos);
    CHECK(msg.find("missing (1)") != std::string::npos);
    CHECK(msg.find("\"model.norm.weight\" [64]") != std::string::npos);
    CHECK(msg.find("unexpected (1)") != std::string::npos);
    CHECK(msg.find("\"model.extra_head.weight\" [2] F32 in model.safetensors") != std::string::npos);
    CHECK(msg.find("wrong shape (1)") != std::string::npos);
    CHECK(msg.find("\"mm_projector.2.bias\" in model.safetensors: [63], expected [64]") != std::string::npos);
    CHECK(msg.find("wrong dtype (1)") != std::string::npos);
    CHECK(msg.find("\"align_indicators.indicator_embs\" in model.safetensors: I16") != std::string::npos);
    CHECK(params_of(m) == before);

    // the same through load_aligngpt: one message, nothing returned
    const std::string msg2 = message_of([&] { pretrained::load_aligngpt(d, quiet()); });
    CHECK(msg2.find("load_aligngpt: " + d) != std::string::npos);
    CHECK(msg2.find("model.norm.weight") != std::string::npos);
    CHECK(msg2.find("model.extra_head.weight") != std::string::npos);
}

TEST_CASE("loader: a load that fails in the vision tower leaves the language model untouched too") {
    // LLM part fine, vision tower with one wrong-shape tensor: staged together, committed together.
    const std::string v = tmp_dir("bad_vision");
    fs::copy_file(clip_dir + "/config.json", v + "/config.json");
    write_copy(io::tensor_source::open(clip_dir), v + "/model.safetensors", [](raw_tensor& t) {
        if (t.name == "vision_model.post_layernorm.bias") t.shape = {2, 16};
        return true;
    });
    const std::string msg = message_of([&] { pretrained::load_aligngpt(st_dir, quiet(v)); });
    CHECK(msg.find("\"vision_model.post_layernorm.bias\" in model.safetensors: [2,16], expected [32]") != std::string::npos);

    // load_parameters on an existing CLIP: the good values are never swapped in
    auto vc = models::clip_vision_config::from_file(clip_dir + "/config.json");
    auto vit = models::clip_vision_model<float>::make(vc);
    vit.class_embedding.value().fill(5.0f);
    CHECK_THROWS(io::load_parameters(vit, io::tensor_source::open(v), quiet()));
    CHECK(vit.class_embedding.value().to_vector() == std::vector<float>(32, 5.0f));
    io::load_parameters(vit, io::tensor_source::open(clip_dir), quiet());
    CHECK(vit.class_embedding.value().to_vector() ==
          source_values(io::tensor_source::open(clip_dir), "vision_model.embeddings.class_embedding"));
}

TEST_CASE("loader: a shard name with ../ in the index is refused") {
    const std::string d = tmp_dir("traversal");
    fs::copy_file(st_dir + "/config.json", d + "/config.json");
    fs::create_directories(d + "/sub");
    for (const auto& e : fs::directory_iterator(st_dir))
        if (e.path().extension() == ".safetensors") fs::copy_file(e.path(), d + "/" + e.path().filename().string());
    std::ifstream in(st_dir + "/model.safetensors.index.json");
    nlohmann::json idx = nlohmann::json::parse(in);
    idx["weight_map"]["model.norm.weight"] = "../loader_traversal/" + idx["weight_map"]["model.norm.weight"].get<std::string>();
    std::ofstream(d + "/model.safetensors.index.json") << idx.dump(1);
    const std::string msg = message_of([&] { pretrained::load_aligngpt(d, quiet()); });
    INFO(msg);
    CHECK(msg.find("model.norm.weight") != std::string::npos);
    CHECK(msg.find("plain file name") != std::string::npos);
}

TEST_CASE("loader: config.json is validated before allocation; errors name the file and the field") {
    std::ifstream in(st_dir + "/config.json");
    const nlohmann::json base = nlohmann::json::parse(in);
    const auto try_config = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& vision = clip_dir) {
        const std::string d = tmp_dir("config");
        nlohmann::json j = base;
        edit(j);
        std::ofstream(d + "/config.json") << j.dump(1);
        fs::create_symlink(fs::absolute(st_dir + "/model.safetensors.index.json"), d + "/model.safetensors.index.json");
        return message_of([&] { pretrained::load_aligngpt(d, quiet(vision)); });
    };
    std::string m = try_config([](nlohmann::json& j) { j["num_attention_heads"] = 5; });
    CHECK(m.find("config.json: field 'num_attention_heads' must divide hidden_size = 64, got 5") != std::string::npos);
    m = try_config([](nlohmann::json& j) { j["hidden_size"] = "64"; });
    CHECK(m.find("config.json: field 'hidden_size' must be an integer in [1, 65536], got \"64\"") != std::string::npos);
    m = try_config([](nlohmann::json& j) { j["mm_hidden_size"] = 48; });
    CHECK(m.find("field 'mm_hidden_size' must be the vision tower's hidden_size, 32") != std::string::npos);
    CHECK(m.find("got 48") != std::string::npos);
    m = try_config([](nlohmann::json& j) { j["model_type"] = "bert"; });
    CHECK(m.find("field 'model_type' must be \"aligngpt\"") != std::string::npos);
    CHECK(m.find("got \"bert\"") != std::string::npos);
    m = try_config([](nlohmann::json& j) { j["mm_use_im_start_end"] = true; });
    CHECK(m.find("field 'mm_use_im_start_end'") != std::string::npos);
    m = try_config([](nlohmann::json& j) { j["mm_vision_select_layer"] = -7; });
    CHECK(m.find("field 'mm_vision_select_layer'") != std::string::npos);
    // a hub id that is not a local directory
    m = try_config([](nlohmann::json&) {}, "");
    CHECK(m.find("field 'mm_vision_tower' must be a local directory, got \"openai/clip-vit-large-patch14-336\"") !=
          std::string::npos);
    CHECK(m.find("--vision-tower DIR") != std::string::npos);
    m = message_of([&] { pretrained::load_aligngpt(st_dir + "/nonexistent", quiet()); });
    CHECK(m.find("not a directory") != std::string::npos);
}

TEST_CASE("loader: the stage-1 file overrides projector and indicators, mapped by suffix") {
    const auto s1 = pretrained::stage1_source(stage1);
    CHECK(s1.size() == 5);
    auto o = quiet();
    o.mm_projector = stage1;
    auto m = pretrained::load_aligngpt(st_dir, o);
    const auto p = params_of(*m.model);
    CHECK(m.stage1_file == stage1);
    CHECK(p.at("mm_projector.0.weight") == source_values(s1, "mm_projector.0.weight"));
    CHECK(p.at("align_indicators.indicator_embs") == source_values(s1, "align_indicators.indicator_embs"));
    const auto st = io::tensor_source::open(st_dir);
    CHECK(p.at("mm_projector.0.weight") != source_values(st, "mm_projector.0.weight"));
    CHECK(p.at("gated_weight_layer.mlp.0.weight") == source_values(st, "gated_weight_layer.mlp.0.weight"));

    // keys with a module path prefix map the same way (LLaVA-style "model.mm_projector.*")
    const std::string d = tmp_dir("stage1");
    write_copy(s1, d + "/mm_projector.bin", [](raw_tensor& t) {
        t.name = "model." + t.name;
        return true;
    });
    CHECK(pretrained::stage1_source(d + "/mm_projector.bin").find("align_indicators.indicator_embs"));
    CHECK(pretrained::stage1_source(d + "/mm_projector.bin").find("mm_projector.2.bias"));

    // a pretrain output: the LLM from base_llm, projector + indicators from mm_projector_align.bin, no gate
    CHECK(message_of([&] { pretrained::load_aligngpt(pretrain_dir, quiet()); }).find("base_llm") != std::string::npos);
    auto po = quiet();
    po.base_llm = st_dir;
    auto pm = pretrained::load_aligngpt(pretrain_dir, po);
    const auto pp = params_of(*pm.model);
    CHECK(pm.stage1_file == stage1);
    CHECK(pm.config.image_aspect_ratio == "square");
    CHECK(pp.at("model.layers.1.mlp.down_proj.weight") == source_values(st, "model.layers.1.mlp.down_proj.weight"));
    CHECK(pp.at("mm_projector.2.weight") == source_values(s1, "mm_projector.2.weight"));
    CHECK(pp.at("gated_weight_layer.mlp.2.bias") == std::vector<float>(7, 0.0f));  // not in a stage-1 output
}

TEST_CASE("loader: weights_dtype bf16 packs the LLM linears exactly from the file") {
    auto o = quiet();
    o.dtype = io::weights_dtype::bf16;
    auto m = pretrained::load_aligngpt(st_dir, o);
    auto ref = pretrained::load_aligngpt(st_dir, quiet());
    CHECK(m.packed.bf16_weights.size() == 2 * 7 + 1);
    CHECK(m.packed.f16_weights.empty());
    CHECK(m.stats.packed == 15);
    const auto pr = params_of(*ref.model);
    for (const auto& kv : m.packed.bf16_weights) {
        const std::string& name = kv.first;
        const auto& pw = kv.second;
        INFO(name);
        CHECK(pretrained::is_llm_linear_weight(name));
        const auto& w = pr.at(name);
        std::vector<float> row(std::size_t(pw->K()));
        for (index_t j = 0; j < pw->N(); j++) {
            pw->unpack_row(j, row.data());
            REQUIRE(std::equal(row.begin(), row.end(), w.begin() + j * pw->K()));
        }
    }
    // nn::linear holds the 14 decoder linears and lm_head as bf16 panels, with no f32 copy; the packed
    // model computes the same logits as the f32 one, bit for bit.
    int packed_linears = 0;
    for (auto& layer : m.model->llm.layers)
        for (auto* l :
             {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj, &layer.gate_proj, &layer.up_proj, &layer.down_proj})
            packed_linears += l->packed_bf16 != nullptr;
    CHECK(packed_linears == 14);
    CHECK(m.model->llm.lm_head.packed_bf16 != nullptr);
    {
        const std::vector<std::int64_t> ids{1, 5, 9, 3, 7};
        const std::vector<std::int64_t> pos{0, 1, 2, 3, 4};
        auto run = [&](const auto& model) {
            const index_t H = model.config.llm.hidden_size;
            auto x = ag::reshape<float, backend::cpu>(nullptr, model.llm.embed(nullptr, ids), {1, 5, H});
            return model.llm.forward(nullptr, x, pos).logits.value().to_vector();
        };
        const auto a = run(*m.model), b = run(*ref.model);
        CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    }

    // packed_store_only: a packed bare matrix (here the embedding, which pack_if picks) goes to the
    // store only, and the module's variable keeps its own value
    auto so = o;
    so.packed_store_only = true;
    so.load_vision = false;
    so.pack_if = [](std::string_view name) { return name == "model.embed_tokens.weight"; };
    auto s = pretrained::load_aligngpt(st_dir, so);
    CHECK(!s.vision);
    CHECK(s.packed.size() == 1);
    CHECK(s.packed.bf16_weights.count("model.embed_tokens.weight") == 1);
    const auto& embed = s.model->llm.embed_tokens.weight.value();
    CHECK(embed.to_vector() == std::vector<float>(std::size_t(embed.numel()), 0.0f));
    CHECK(params_of(*s.model).at("model.norm.weight") == pr.at("model.norm.weight"));

    // f16 requested on a bf16 file: nothing can be packed exactly, everything stays f32
    auto fo = quiet();
    fo.dtype = io::weights_dtype::f16;
    fo.load_vision = false;
    std::ostringstream log;
    fo.quiet = false;
    fo.log = &log;
    auto f = pretrained::load_aligngpt(st_dir, fo);
    CHECK(f.packed.size() == 0);
    CHECK(log.str().find("kept in f32") != std::string::npos);
    CHECK(log.str().find("[load] aligngpt: ") != std::string::npos);
    CHECK(params_of(*f.model) == pr);
}

TEST_CASE("loader: CLIP vision weights from a CLIPModel directory and from the copy in an AlignGPT file") {
    // CLIPModel file: the text tower is out of scope
    const std::string cm = std::string(ALIGNGPT_GOLDEN_DIR) + "/clip_model_tiny";
    auto vit = models::clip_vision_model<float>::make(models::clip_vision_config::from_file(cm + "/config.json"));
    const std::string msg = message_of([&] { io::load_parameters(vit, io::tensor_source::open(cm), quiet()); });
    CHECK(msg.find("unexpected") != std::string::npos);
    CHECK(msg.find("\"text_model.") != std::string::npos);
    auto o = quiet();
    o.scope = {"vision_model."};
    const auto r = io::load_parameters(vit, io::tensor_source::open(cm), o);
    CHECK(r.stats.tensors == vit.layers.size() * 16 + 7);

    // prefix mapping: the CLIP module's "vision_model.*" read as "vision_tower.vision_tower.vision_model.*"
    auto copy = models::clip_vision_model<float>::make(models::clip_vision_config::from_file(clip_dir + "/config.json"));
    auto co = quiet();
    co.rename = {{"vision_model.", "vision_tower.vision_tower.vision_model."}};
    co.scope = {"vision_tower.vision_tower."};
    io::load_parameters(copy, io::tensor_source::open(bin_dir), co, "vision copy");
    const auto src = io::tensor_source::open(bin_dir);
    CHECK(copy.class_embedding.value().to_vector() ==
          source_values(src, "vision_tower.vision_tower.vision_model.embeddings.class_embedding"));
    CHECK(copy.layers[1].fc2.weight.value().to_vector() ==
          source_values(src, "vision_tower.vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight"));
}

namespace {
/// The input width of a model's gate (its first linear's weight [256, width]).
index_t gate_width(const models::aligngpt_model<float>& m) {
    CHECK(m.gated_weight.fc1.weight.name() == pretrained::gate_input_weight);
    return m.gated_weight.fc1.weight.size(1);
}
/// A copy of clip_vision/ whose image_size is `image_size` (patch 2), position embeddings to match.
std::string tower_of(const std::string& name, index_t image_size) {
    const std::string v = tmp_dir(name);
    std::ifstream in(clip_dir + "/config.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["image_size"] = image_size;
    std::ofstream(v + "/config.json") << c.dump(1);
    const index_t positions = (image_size / 2) * (image_size / 2) + 1;
    write_copy(io::tensor_source::open(clip_dir), v + "/model.safetensors", [&](raw_tensor& t) {
        if (t.name == "vision_model.embeddings.position_embedding.weight") {
            t.shape[0] = positions;
            t.bytes.resize(std::size_t(positions * t.shape[1]) * 4);
        }
        return !t.name.ends_with("position_ids");
    });
    return v;
}
/// A copy of aligngpt_st/ (one file) whose gate takes `width` image tokens.
std::string checkpoint_with_gate(const std::string& name, index_t width) {
    const std::string d = tmp_dir(name);
    fs::copy_file(st_dir + "/config.json", d + "/config.json");
    write_copy(io::tensor_source::open(st_dir), d + "/model.safetensors", [&](raw_tensor& t) {
        if (t.name == pretrained::gate_input_weight) {
            const std::size_t elem = t.bytes.size() / std::size_t(t.shape[0] * t.shape[1]);
            t.shape[1] = width;
            t.bytes.resize(std::size_t(t.shape[0] * width) * elem);
        }
        return true;
    });
    return d;
}
}  // namespace

TEST_CASE("loader: the image-token count follows the vision tower; a gate trained for another count is refused") {
    auto m = pretrained::load_aligngpt(st_dir, quiet());
    CHECK(m.config.model.n_image_tokens == 576);  // (48 / 2)^2, as (336 / 14)^2 for CLIP-L/14-336
    CHECK(m.model->config.n_image_tokens == 576);

    // the published gate (576 wide) with a 256-patch tower (32 px / 2, as 224 px / 14): refused
    // before anything is read, naming both numbers and both files
    const std::string v256 = tower_of("tower256", 32);
    std::string msg = message_of([&] { pretrained::load_aligngpt(st_dir, quiet(v256)); });
    INFO(msg);
    CHECK(msg.find(".safetensors: tensor \"gated_weight_layer.mlp.0.weight\"") != std::string::npos);
    CHECK(msg.find("takes 576 image tokens, but the vision tower gives 256 patches per image (") != std::string::npos);
    CHECK(msg.find(v256 + "/config.json: (image_size 32 / patch_size 2)^2") != std::string::npos);

    // a gate of 575 with the 576-patch tower
    const std::string d575 = checkpoint_with_gate("gate575", 575);
    msg = message_of([&] { pretrained::load_aligngpt(d575, quiet()); });
    CHECK(msg.find(d575 + "/model.safetensors: tensor \"gated_weight_layer.mlp.0.weight\" [") != std::string::npos);
    CHECK(msg.find("takes 575 image tokens, but the vision tower gives 576 patches") != std::string::npos);
    // without a tower the count is the config default, 576
    auto nv = quiet();
    nv.load_vision = false;
    msg = message_of([&] { pretrained::load_aligngpt(d575, nv); });
    CHECK(msg.find("takes 575 image tokens, but the model expects 576 (the default; no vision tower is loaded)") !=
          std::string::npos);

    // a matching pair at 256: the gate's width comes from config.n_image_tokens, and a prefill runs
    models::aligngpt_config c256 = m.config.model;
    c256.n_image_tokens = 256;
    CHECK(gate_width(models::aligngpt_model<float>(c256)) == 256);
    const std::string d256 = checkpoint_with_gate("gate256", 256);
    auto m256 = pretrained::load_aligngpt(d256, quiet(v256));
    CHECK(m256.model->config.n_image_tokens == 256);
    CHECK(gate_width(*m256.model) == 256);
    const index_t S = m256.vision_config.image_size;
    const auto px = autograd::variable<float>::leaf(tensor<float>({1, 3, S, S}));
    const auto out = m256.model->forward_pixels(nullptr, {models::sample{{1, models::image_token_index, 5}}}, *m256.vision, px,
                                                models::stage::inference);
    CHECK(out.batch.S == 1 + 1 + 256 + 1);  // BOS, indicator, 256 image rows, one token
    CHECK(out.gate.weights.shape() == shape_t{1, 7});
}

}  // namespace test_loader
