#pragma once
// Both AlignGPT training stages on one process (the paper's section 3.2, alignment-level-aware
// pre-training, and 3.3, adaptive-alignment instruction tuning), set up as the reference's src/train/train.py sets them up and
// stepped as the HF Trainer steps them. docs/training.md has the whole story; the short one:
//
//   train::options o;
//   o.stage = models::stage::pretrain;  o.model_dir = "vicuna-7b-v1.5";  o.vision_tower = "clip-336";
//   o.data_path = "blip_558k_levels.json";  o.image_folder = "images";  o.output_dir = "out";
//   train::trainer(o).run();        // OUT/metrics.jsonl, OUT/checkpoint-<step>/, OUT/mm_projector_align.bin
//
// Trainable sets (models::aligngpt_model::set_trainable_for): pretrain = projector + the 8 level
// embeddings (each sample's level picks its row); finetune = the whole LLM + projector + gate, the level
// embeddings frozen. The vision tower is frozen and runs without a tape; a frozen parameter never gets a
// gradient buffer, but gradients flow through the frozen LLM to its inputs (stage 1).
//
// One optimizer step = K = gradient_accumulation_steps micro-batches. Each micro-batch's gradients land
// in fresh buffers and the K sets are summed by a fixed binary tree, then scaled by 1/K once
// (train/optim.h: the order that keeps bits when the micro-batches later live on several processes).
// The reference scales each micro-loss by 1/K instead: equal in exact arithmetic. The step's loss is
// the mean of its micro-batch losses (what HF logs); each micro-batch loss is one mean over all its
// target tokens. grad_norm is the global L2 norm of the trainable gradients before clipping; lr is
// the rate this step's update used (HF's log shows the next step's).
//
// Micro-batches are taken from the concatenated epochs, K at a time (HF 4.31's total_batched_samples
// rule), so a step may span an epoch boundary; total steps = ceil(epochs * (micro-batches per epoch //
// K)) or max_steps. Epoch e's order is a seeded permutation of the records (train/data.h), or file
// order with shuffle = false, or the modality-grouped order.
//
// State that makes a resumed run continue bit for bit: trainable parameters (f32 masters), AdamW
// moments and its step, the global step, the count of consecutive non-finite steps. The data order and
// every random number are functions of (seed, epoch, index), so the data cursor is the global step.
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "aligngpt/io/checkpoint.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/io/torch_bin_writer.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip_vision.h"
#include "aligngpt/pretrained.h"
#include "aligngpt/tokenizer/llama.h"
#include "aligngpt/train/checkpoint.h"
#include "aligngpt/train/data.h"
#include "aligngpt/train/optim.h"

namespace aligngpt::train {

/// Everything a run is configured by. Defaults are the official scripts' (scripts/pretrain.sh and
/// finetune.sh) per stage where a flag is left unset (see defaults_for), else HF TrainingArguments'.
struct options {
    models::stage stage = models::stage::pretrain;
    std::string model_dir;     ///< plain LLaMA/Vicuna directory, or an AlignGPT directory
    std::string vision_tower;  ///< CLIP directory (default: the AlignGPT config's mm_vision_tower)
    std::string data_path, image_folder, output_dir;
    std::string pretrain_mm_mlp_align;    ///< stage-1 file: projector + level embeddings (stage 2)
    std::optional<double> learning_rate;  ///< pretrain 1e-3, finetune 2e-5
    double weight_decay = 0.0;
    std::optional<index_t> per_device_train_batch_size;  ///< pretrain 8, finetune 16
    std::optional<index_t> gradient_accumulation_steps;  ///< pretrain 4, finetune 1
    double warmup_ratio = 0.03;
    std::string lr_scheduler_type = "cosine";
    index_t model_max_length = 2048;
    std::int64_t max_steps = -1;  ///< > 0 overrides num_train_epochs
    double num_train_epochs = 1.0;
    std::int64_t save_steps = 500;  ///< 0: only the final checkpoint
    index_t save_total_limit = 0;   ///< newest K checkpoints kept; 0 keeps all
    std::int64_t logging_steps = 1;
    double max_grad_norm = 1.0;  ///< 0: no clipping (the reference's DeepSpeed runs clip nothing)
    std::uint64_t seed = 42;
    bool resume = false;
    bool shuffle = true;  ///< false: file order (what the parity tests use)
    bool group_by_modality_length = false;
    bool gradient_checkpointing = false;  ///< recompute each decoder layer in backward
    /// Stage 1: the frozen LLM's linear weights kept 16-bit in memory (packed straight from a file that
    /// holds that dtype, e.g. vicuna's f16: half the memory; the forward and the input gradient widen
    /// them exactly). Stage 2 trains the LLM: its master weights are f32.
    io::weights_dtype frozen_dtype = io::weights_dtype::f32;
    std::uint64_t memory_budget = 0;  ///< bytes; 0: no limit. The plan is printed either way.
    int max_consecutive_nonfinite = 5;
    bool quiet = false;
    std::ostream* log = &std::cerr;
    /// Stage 2's indicator: the gate's mix (the paper) or one of the ablations of models/align.h
    /// (global_only, local_only, mean, fixed_level). Stage 1 always looks up each record's level.
    /// align_mode::none trains LLaVA-1.5 instead (the paper's baseline), both stages: no level
    /// embeddings, no gate, no "similarity" needed; the outputs are LLaVA's (model_type "llava",
    /// mm_projector.bin).
    models::alignment align{};
    std::string conv_version;        ///< "" = plain (pretrain) / vicuna_v1 (finetune)
    std::string image_aspect_ratio;  ///< "" = square (pretrain) / pad (finetune)
    /// Test hook: sees (and may change) each step's reduced gradients and loss before any check.
    std::function<void(std::int64_t step, std::vector<tensor<float>>& grads, double& loss)> on_gradients;
    /// Test hook: called after each completed step; returning false stops the run like SIGTERM does.
    std::function<bool(std::int64_t step)> on_step;
};

inline const char* stage_name(models::stage s) {
    return s == models::stage::pretrain ? "pretrain" : s == models::stage::finetune ? "finetune" : "inference";
}

/// One metrics.jsonl line.
struct step_record {
    std::int64_t step = 0;  ///< 1-based
    double loss = 0, lr = 0, grad_norm = 0;
    bool skipped = false;  ///< non-finite loss or gradient: nothing was updated
    double seconds = 0, tokens = 0;
};

/// How a run ended.
struct run_result {
    std::int64_t steps_done = 0, total_steps = 0;
    bool interrupted = false;  ///< SIGTERM / SIGINT / on_step: a checkpoint was written, resume continues
    std::string last_checkpoint;
    std::vector<step_record> steps;  ///< this invocation's steps
};

namespace detail {
inline std::atomic<int> stop_signal{0};
extern "C" inline void on_stop_signal(int sig) { stop_signal.store(sig); }

/// Installs SIGTERM/SIGINT handlers for the lifetime of a run: the current step finishes, a checkpoint
/// is written, run() returns with interrupted = true.
class signal_guard {
public:
    signal_guard() {
        stop_signal.store(0);
        struct sigaction sa {};
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        ::sigaction(SIGTERM, &sa, &old_term_);
        ::sigaction(SIGINT, &sa, &old_int_);
    }
    ~signal_guard() {
        ::sigaction(SIGTERM, &old_term_, nullptr);
        ::sigaction(SIGINT, &old_int_, nullptr);
    }
    signal_guard(const signal_guard&) = delete;
    signal_guard& operator=(const signal_guard&) = delete;

private:
    struct sigaction old_term_ {
    }, old_int_{};
};

inline std::string fmt(const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}
inline std::string hms(double s) {
    const long t = long(std::max(0.0, s));
    char b[32];
    std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    return b;
}
inline std::string bytes_text(double b) {
    return b >= 1e9 ? fmt("%.2f GB", b / 1e9) : b >= 1e6 ? fmt("%.1f MB", b / 1e6) : fmt("%.0f kB", b / 1e3);
}

/// The module made of the parts a stage-1 file holds (projector + level embeddings), for the loader.
template <class M>
struct stage1_part {
    M* m;
    template <class F>
    void visit(F&& f) {
        m->mm_projector.visit(f);
        if (m->config.alignment_module) m->align_indicators.visit(f);
    }
};
}  // namespace detail

/// The memory a run needs, from the configuration alone (before anything large is allocated).
struct memory_plan {
    double weights = 0, gradients = 0, moments = 0, activations = 0;
    double total() const { return weights + gradients + moments + activations; }
    std::string table() const {
        std::ostringstream o;
        o << "[train] memory plan: weights " << detail::bytes_text(weights) << ", gradients " << detail::bytes_text(gradients)
          << ", AdamW moments " << detail::bytes_text(moments) << ", activations (upper bound) "
          << detail::bytes_text(activations) << "; total " << detail::bytes_text(total());
        return o.str();
    }
};

/// What resume reads from a checkpoint's trainer_state.json: the step counters and the saved
/// configuration (refuse_mismatch compares it with this run's). The manifest's hashes only prove
/// that the files are what was listed, and a hand-made checkpoint lists anything: every field is
/// checked, and errors name the file and the field.
struct trainer_state {
    std::int64_t global_step = 0, consecutive_nonfinite = 0;
    nlohmann::json config;

    static trainer_state read(const checkpoint& c) {
        const std::string where = c.dir() + "/trainer_state.json";
        const nlohmann::json st = c.json("trainer_state.json");
        const io::json_reader r(st, where);  // refuses a non-object, naming the file
        trainer_state s;
        s.global_step = r.integer("global_step", std::nullopt, c.step(), c.step());  // the writer names the dir by it
        s.consecutive_nonfinite = r.integer("consecutive_nonfinite", std::nullopt, 0, std::int64_t(1) << 62);
        const nlohmann::json* cfg = r.get("config");
        if (!cfg || !cfg->is_object()) r.must_be("config", "the saved configuration (a JSON object)");
        s.config = *cfg;
        return s;
    }
};

class trainer {
public:
    using model_type = models::aligngpt_model<float>;
    using var = autograd::variable<float>;

    explicit trainer(options o) : o_(std::move(o)) {}

    /// Runs (or resumes) the configured stage; returns when done, interrupted, or throws.
    run_result run() {
        namespace fs = std::filesystem;
        resolve_defaults();
        ALIGNGPT_CHECK(!o_.output_dir.empty(), "train: --output-dir is required");
        fs::create_directories(o_.output_dir);
        remove_stale_staging(o_.output_dir);
        load();
        make_data();
        plan_steps();
        print_plan();
        init_optimizer();
        if (o_.resume)
            resume();
        else
            start_metrics();
        return loop();
    }

    const model_type& model() const { return *model_; }
    model_type& model() { return *model_; }
    /// The trainable parameters, in the model's visit order (their names are HF keys).
    const std::vector<var>& trainable() const { return params_; }
    std::int64_t total_steps() const { return total_; }
    const options& settings() const { return o_; }

private:
    options o_;
    std::optional<model_type> model_;
    std::optional<models::clip_vision_model<float>> vision_;
    models::clip_vision_config vcfg_;
    io::clip_image_processor_config proc_;
    nlohmann::json base_config_;  ///< the model directory's config.json
    io::packed_store packed_;     ///< --frozen-dtype bf16/f16: the LLM's packed linears
    std::optional<tokenizer::llama_tokenizer> tok_;
    std::optional<dataset> data_;
    std::vector<var> params_;
    std::optional<adamw> opt_;
    std::int64_t step_ = 0, total_ = 0, warmup_ = 0, micro_per_epoch_ = 0, nonfinite_run_ = 0;
    index_t B_ = 0, K_ = 0;
    schedule sched_ = schedule::cosine;

    std::ostream* log() const { return o_.quiet ? nullptr : o_.log; }
    bool pretrain() const { return o_.stage == models::stage::pretrain; }
    bool llava() const { return o_.align.mode == models::align_mode::none; }  ///< the LLaVA-1.5 baseline

    void resolve_defaults() {
        ALIGNGPT_CHECK(o_.stage != models::stage::inference, "train: stage must be pretrain or finetune");
        if (!o_.learning_rate) o_.learning_rate = pretrain() ? 1e-3 : 2e-5;
        if (!o_.per_device_train_batch_size) o_.per_device_train_batch_size = pretrain() ? 8 : 16;
        if (!o_.gradient_accumulation_steps) o_.gradient_accumulation_steps = pretrain() ? 4 : 1;
        if (o_.conv_version.empty()) o_.conv_version = pretrain() ? "plain" : "vicuna_v1";
        if (o_.image_aspect_ratio.empty()) o_.image_aspect_ratio = pretrain() ? "square" : "pad";
        B_ = *o_.per_device_train_batch_size, K_ = *o_.gradient_accumulation_steps;
        ALIGNGPT_CHECK(B_ >= 1 && B_ <= 4096, "train: --per-device-train-batch-size must be in [1, 4096], got ", B_);
        ALIGNGPT_CHECK(K_ >= 1 && K_ <= 65536, "train: --gradient-accumulation-steps must be in [1, 65536], got ", K_);
        ALIGNGPT_CHECK(*o_.learning_rate >= 0 && std::isfinite(*o_.learning_rate),
                       "train: --learning-rate must be finite and >= 0");
        ALIGNGPT_CHECK(o_.warmup_ratio >= 0 && o_.warmup_ratio <= 1, "train: --warmup-ratio must be in [0, 1], got ",
                       o_.warmup_ratio);
        ALIGNGPT_CHECK(o_.max_grad_norm >= 0 && std::isfinite(o_.max_grad_norm), "train: --max-grad-norm must be >= 0");
        ALIGNGPT_CHECK(o_.model_max_length >= 2, "train: --model-max-length must be >= 2, got ", o_.model_max_length);
        ALIGNGPT_CHECK(o_.max_steps > 0 || (o_.num_train_epochs > 0 && std::isfinite(o_.num_train_epochs)),
                       "train: give --max-steps N > 0 or --num-train-epochs > 0");
        sched_ = parse_schedule(o_.lr_scheduler_type);
        if (o_.frozen_dtype != io::weights_dtype::f32 && !pretrain())
            fail("train: --frozen-dtype ", io::weights_dtype_name(o_.frozen_dtype), " is for stage 1 (pretrain), where the LLM ",
                 "is frozen; stage 2 trains the LLM, whose master weights are f32");
        if (o_.pretrain_mm_mlp_align.size() && pretrain())
            fail("train: --pretrain-mm-mlp-align is the stage-1 output that stage 2 starts from; stage 1 creates it");
    }

    /// The model for the stage: a plain LLaMA/Vicuna directory gets a new projector, level embeddings and
    /// gate (the reference's init bounds through the seeded RNG); an AlignGPT directory keeps its own.
    void load() {
        namespace fs = std::filesystem;
        const std::string cfg_path = o_.model_dir + "/config.json";
        ALIGNGPT_CHECK(fs::is_regular_file(cfg_path), "train: --model \"", o_.model_dir, "\": no config.json");
        base_config_ = io::read_json_file(cfg_path, {.max_bytes = 1 << 20});
        const std::string type =
            base_config_.is_object() && base_config_.contains("model_type") && base_config_["model_type"].is_string()
                ? base_config_["model_type"].get<std::string>()
                : "";
        pretrained::load_options lo;
        lo.quiet = o_.quiet;
        lo.log = o_.log;
        lo.dtype = o_.frozen_dtype;  // packs the LLM's linear weights (pretrained::is_llm_linear_weight)
        lo.pack_if = pretrained::is_llm_linear_weight;
        if (type == "aligngpt" || type == "llava" || type == "llava_llama") {
            lo.vision_tower = o_.vision_tower;
            lo.mm_projector = o_.pretrain_mm_mlp_align;
            auto m = pretrained::load_aligngpt<float>(o_.model_dir, lo);
            ALIGNGPT_CHECK(m.model->config.alignment_module == !llava(), "train: --model \"", o_.model_dir, "\" is ",
                           llava() ? "an AlignGPT model, but --align-mode none trains LLaVA-1.5"
                                   : "a LLaVA model (no alignment module); train it with --align-mode none");
            model_.emplace(std::move(*m.model));
            vision_.emplace(std::move(*m.vision));
            packed_ = std::move(m.packed);
            vcfg_ = m.vision_config;
            o_.vision_tower = m.vision_dir;
        } else {
            ALIGNGPT_CHECK(!o_.vision_tower.empty(), "train: --vision-tower DIR is required with a plain LLaMA directory (",
                           cfg_path, " has model_type \"", type, "\")");
            vcfg_ = models::clip_vision_config::from_file(o_.vision_tower + "/config.json");
            models::aligngpt_config ac;
            ac.llm = models::llama_config::from_json(base_config_, cfg_path);
            ac.mm_hidden_size = vcfg_.hidden_size;
            ac.mm_projector_type = "mlp2x_gelu";
            ac.n_image_tokens = vcfg_.num_patches();
            ac.alignment_module = !llava();
            model_.emplace(ac);
            model_->mm_projector.init_default(o_.seed);
            if (!llava()) model_->align_indicators.init(o_.seed), model_->gated_weight.init(o_.seed);
            vision_.emplace(models::clip_vision_model<float>::make(vcfg_, "vision_model."));
            vision_->select_layer = -2;  // the official scripts' mm_vision_select_layer
            vision_->select_feature = "patch";
            io::staged_load<float> s;
            s.stage(model_->llm, io::tensor_source::open(o_.model_dir), lo, "LLM");
            io::load_options vo = lo;
            vo.dtype = io::weights_dtype::f32;
            vo.scope = {"vision_model."};
            s.stage(*vision_, io::tensor_source::open(o_.vision_tower), vo, "vision tower");
            detail::stage1_part<model_type> part{&*model_};
            io::load_options po = vo;
            po.scope.clear();
            if (!o_.pretrain_mm_mlp_align.empty())
                s.stage(part, pretrained::stage1_source(o_.pretrain_mm_mlp_align), po, "stage-1 file");
            if (!s.ok()) fail(s.errors("train: loading " + o_.model_dir));
            s.commit();
            packed_ = std::move(s.packed());
        }
        model_->config.tokenizer_model_max_length = o_.model_max_length;
        model_->llm.checkpoint_layers = o_.gradient_checkpointing;
        model_->set_trainable_for(o_.stage);
        params_.clear();
        model_->visit([&](var& p) {
            if (p.requires_grad()) params_.push_back(p);
        });
        const std::string pc = o_.vision_tower + "/preprocessor_config.json";
        proc_ = fs::exists(pc) ? io::clip_image_processor_config::from_json_file(pc) : io::clip_image_processor_config{};
        proc_.aspect = io::parse_aspect_mode(o_.image_aspect_ratio);
        tok_.emplace(tokenizer::llama_tokenizer::from_directory(o_.model_dir));
    }

    void make_data() {
        train::dataset_options d;
        if (llava()) d.n_levels = 0;  // LLaVA's stage 1 reads no level
        data_.emplace(o_.data_path, o_.image_folder, *tok_, o_.conv_version, proc_.aspect, proc_, o_.model_max_length, d);
        ALIGNGPT_CHECK(data_->size() > 0, o_.data_path, ": no records to train on");
        if (o_.group_by_modality_length) (void)data_->grouping_lengths();  // a record without words: refused before step 1
    }

    void plan_steps() {
        const std::int64_t n = std::int64_t(data_->size());
        micro_per_epoch_ = (n + B_ - 1) / B_;  // the last batch of an epoch may be short (drop_last false)
        const std::int64_t per_epoch = std::max<std::int64_t>(micro_per_epoch_ / K_, 1);
        total_ = o_.max_steps > 0 ? o_.max_steps : std::int64_t(std::ceil(o_.num_train_epochs * double(per_epoch)));
        warmup_ = warmup_steps(total_, o_.warmup_ratio);
    }

public:
    /// The memory plan printed at start (valid once run() has loaded the model).
    memory_plan plan_memory() const {
        memory_plan p;
        double all = 0, train = 0;
        model_type& m = const_cast<model_type&>(*model_);
        m.visit([&](var& v) { all += double(v.value().numel()); });
        for (const var& v : params_) train += double(v.value().numel());
        double vis = 0;
        const_cast<models::clip_vision_model<float>&>(*vision_).visit([&](var& v) { vis += double(v.value().numel()); });
        double packed = 0;  // packed linears hold 16-bit panels; their f32 buffers are never touched
        for (const auto& [k, w] : packed_.bf16_weights) packed += double(w->N()) * double(w->K());
        for (const auto& [k, w] : packed_.f16_weights) packed += double(w->N()) * double(w->K());
        p.weights = 4 * (all + vis - packed) + double(packed_.bytes());
        // a micro-batch's gradients + the accumulator's partial sums (one per set bit of K)
        p.gradients = 4 * train * (1 + std::ceil(std::log2(double(K_) + 1)));
        p.moments = 8 * train;
        const auto& c = model_->config.llm;
        const double S = double(o_.model_max_length), T = double(B_) * S, H = double(c.hidden_size);
        const double per_layer =
            T * (12 * H + 3 * double(c.intermediate_size)) + double(B_) * double(c.num_attention_heads) * S * S * 2;
        const double layers =
            o_.gradient_checkpointing ? 1 + double(c.num_hidden_layers) * T * H / per_layer : double(c.num_hidden_layers);
        p.activations = 4 * (per_layer * layers + 3 * T * double(c.vocab_size));
        return p;
    }

private:
    void print_plan() {
        const memory_plan p = plan_memory();
        if (auto* l = log()) {
            double train = 0;
            for (const var& v : params_) train += double(v.value().numel());
            *l << "[train] stage " << stage_name(o_.stage) << ": " << params_.size() << " trainable tensors, "
               << std::int64_t(train) << " parameters; " << data_->size() << " records, batch " << B_ << " x " << K_
               << " accumulation, " << total_ << " steps (" << warmup_ << " warmup), lr " << detail::fmt("%g", *o_.learning_rate)
               << " " << o_.lr_scheduler_type << "\n"
               << p.table() << "\n";
        }
        if (o_.memory_budget > 0 && p.total() > double(o_.memory_budget))
            fail("train: the memory plan (", detail::bytes_text(p.total()), ": weights ", detail::bytes_text(p.weights),
                 ", gradients ", detail::bytes_text(p.gradients), ", moments ", detail::bytes_text(p.moments), ", activations ",
                 detail::bytes_text(p.activations), ") exceeds --memory-budget ", detail::bytes_text(double(o_.memory_budget)),
                 "; lower --per-device-train-batch-size or --model-max-length, or use --gradient-checkpointing");
    }

    void init_optimizer() {
        adamw_options ao;
        ao.weight_decay = o_.weight_decay;
        opt_.emplace(params_, ao);
    }

    /// The fields a resumed run must share with the saved one (F9): a difference is refused by name.
    nlohmann::json fingerprint() const {
        nlohmann::json j;
        j["stage"] = stage_name(o_.stage);
        j["model"] = {{"hidden_size", model_->config.llm.hidden_size},
                      {"num_hidden_layers", model_->config.llm.num_hidden_layers},
                      {"vocab_size", model_->config.llm.vocab_size},
                      {"n_image_tokens", model_->config.n_image_tokens},
                      {"mm_hidden_size", model_->config.mm_hidden_size}};
        j["data"] = {{"records", data_->size()}, {"bytes", std::filesystem::file_size(o_.data_path)}};
        j["learning_rate"] = *o_.learning_rate;
        j["weight_decay"] = o_.weight_decay;
        j["per_device_train_batch_size"] = B_;
        j["gradient_accumulation_steps"] = K_;
        j["lr_scheduler_type"] = o_.lr_scheduler_type;
        j["warmup_ratio"] = o_.warmup_ratio;
        j["total_steps"] = total_;
        j["model_max_length"] = o_.model_max_length;
        j["seed"] = o_.seed;
        j["shuffle"] = o_.shuffle;
        j["group_by_modality_length"] = o_.group_by_modality_length;
        j["max_grad_norm"] = o_.max_grad_norm;
        j["conv_version"] = o_.conv_version;
        j["image_aspect_ratio"] = o_.image_aspect_ratio;
        j["frozen_dtype"] = io::weights_dtype_name(o_.frozen_dtype);
        j["align_mode"] = int(o_.align.mode);
        j["align_level"] = o_.align.level;
        return j;
    }

    /// "a.b" paths of every leaf of a JSON object (the fields refuse_mismatch compares).
    static std::vector<std::string> leaf_paths(const nlohmann::json& j, const std::string& prefix = {}) {
        std::vector<std::string> out;
        for (const auto& [k, v] : j.items()) {
            const std::string path = prefix.empty() ? k : prefix + "." + k;
            if (v.is_object()) {
                for (auto& p : leaf_paths(v, path)) out.push_back(std::move(p));
            } else {
                out.push_back(path);
            }
        }
        return out;
    }

    // ---- metrics.jsonl
    std::string metrics_path() const { return o_.output_dir + "/metrics.jsonl"; }
    void start_metrics() {
        io::atomic_file f(metrics_path());
        f.commit();
    }
    void append_metrics(const step_record& r) {
        nlohmann::json j = {{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm}};
        if (r.skipped) j["skipped"] = true;
        j["tokens"] = r.tokens;
        j["seconds"] = r.seconds;
        std::ofstream f(metrics_path(), std::ios::app);
        f << j.dump() << "\n";
        f.flush();
        ALIGNGPT_CHECK(bool(f), metrics_path(), ": cannot append a metrics line");
    }
    /// Resume: keep the lines of the steps up to the checkpoint (a run killed later wrote more).
    void truncate_metrics(std::int64_t upto) {
        std::string kept;
        std::ifstream in(metrics_path());
        for (std::string line; std::getline(in, line);) {
            if (line.empty()) continue;
            const auto j = nlohmann::json::parse(line, nullptr, false);
            if (j.is_object() && j.contains("step") && j["step"].is_number_integer() && j["step"].get<std::int64_t>() <= upto)
                kept += line + "\n";
        }
        io::atomic_file f(metrics_path());
        f.write(kept.data(), kept.size());
        f.commit();
    }

    // ---- checkpoints
    std::string save_checkpoint() {
        checkpoint_writer w(o_.output_dir, step_);
        std::vector<std::pair<std::string, tensor<float>>> model_t, opt_t;
        for (const var& p : params_) model_t.emplace_back(p.name(), p.value());
        for (auto& [name, t] : opt_->export_state()) opt_t.emplace_back(name, std::move(t));
        w.add_tensors("model.safetensors", model_t);
        w.add_tensors("optimizer.safetensors", opt_t);
        nlohmann::json st = {{"global_step", step_}, {"consecutive_nonfinite", nonfinite_run_}, {"config", fingerprint()}};
        w.add_json("trainer_state.json", st);
        const std::string dir = w.commit(o_.save_total_limit);
        if (auto* l = log()) *l << "\n[train] saved " << dir << "\n";
        return dir;
    }

    void resume() {
        resume_report report;
        auto found = find_resumable(o_.output_dir, &report);
        if (auto* l = log()) *l << report.text();
        if (!found) {
            if (auto* l = log()) *l << "[train] --resume: no checkpoint in " << o_.output_dir << "; starting at step 0\n";
            start_metrics();
            return;
        }
        const std::string dir = found->dir();
        const trainer_state st = trainer_state::read(*found);
        const nlohmann::json now = fingerprint();
        refuse_mismatch(st.config, now, leaf_paths(now), dir + "/trainer_state.json");
        // all-or-nothing: every tensor is read and checked before any parameter changes
        const auto model_file = found->tensors("model.safetensors");
        std::vector<tensor<float>> values;
        for (var& p : params_) {
            const auto* t = model_file.find(p.name());
            ALIGNGPT_CHECK(t != nullptr, dir, "/model.safetensors: no tensor \"", p.name(), "\"");
            ALIGNGPT_CHECK(t->shape == p.shape(), dir, "/model.safetensors: \"", p.name(), "\" has shape ",
                           aligngpt::detail::shape_str(t->shape), ", the model has ", aligngpt::detail::shape_str(p.shape()));
            values.push_back(model_file.tensor_as<float>(p.name()));
        }
        const auto opt_file = found->tensors("optimizer.safetensors");
        std::vector<std::pair<std::string, tensor<float>>> state;
        for (const auto& t : opt_file.tensors()) state.emplace_back(t.name, opt_file.tensor_as<float>(t.name));
        opt_->import_state(state, dir + "/optimizer.safetensors");
        for (std::size_t k = 0; k < params_.size(); k++) params_[k].value() = values[k];
        step_ = st.global_step;
        nonfinite_run_ = st.consecutive_nonfinite;
        truncate_metrics(step_);
        if (auto* l = log()) *l << "[train] resumed from " << dir << " at step " << step_ << "\n";
    }

    // ---- data order
    std::vector<std::size_t> order_of_epoch(std::int64_t epoch) const {
        const std::size_t n = data_->size();
        if (!o_.shuffle) {
            std::vector<std::size_t> o(n);
            for (std::size_t i = 0; i < n; i++) o[i] = i;
            return o;
        }
        if (o_.group_by_modality_length)
            return modality_grouped_order(data_->grouping_lengths(), std::size_t(B_), 1, o_.seed, std::uint64_t(epoch));
        return epoch_order(n, o_.seed, std::uint64_t(epoch));
    }
    /// The records of global micro-batch u (epochs concatenated).
    std::vector<std::size_t> micro_batch(std::int64_t u) {
        const std::int64_t epoch = u / micro_per_epoch_, j = u % micro_per_epoch_;
        if (epoch != cached_epoch_) order_ = order_of_epoch(epoch), cached_epoch_ = epoch;
        const std::size_t a = std::size_t(j * B_), b = std::min(order_.size(), std::size_t((j + 1) * B_));
        return {order_.begin() + std::ptrdiff_t(a), order_.begin() + std::ptrdiff_t(b)};
    }
    std::vector<std::size_t> order_;
    std::int64_t cached_epoch_ = -1;

    /// One micro-batch: forward, backward, its gradients moved out of the parameters (fresh buffers).
    double micro_step(const std::vector<std::size_t>& records, std::vector<tensor<float>>& grads, double& tokens) {
        std::vector<models::sample> samples;
        std::vector<tensor<float>> pixels;
        for (std::size_t i : records) {
            example e = data_->get(i);
            if (e.pixels.defined()) pixels.push_back(e.pixels);
            samples.push_back(std::move(e.sample));
        }
        var features;
        if (!pixels.empty()) {
            const index_t S = pixels[0].size(1);
            tensor<float> batch({index_t(pixels.size()), 3, S, S});
            for (std::size_t k = 0; k < pixels.size(); k++)
                std::copy_n(pixels[k].data(), pixels[k].numel(), batch.data() + index_t(k) * pixels[k].numel());
            features = vision_->features(nullptr, var::leaf(batch), vision_->select_layer, vision_->select_feature);
        }
        autograd::tape<float> tp;
        auto out = model_->forward(&tp, samples, features, o_.stage, o_.align);
        for (auto m : out.batch.mask) tokens += m;
        const double loss = double(out.loss.value().data()[0]);
        tp.backward(out.loss);
        grads.clear();
        for (var& p : params_) {
            grads.push_back(p.grad().defined() ? p.grad() : tensor<float>(p.shape()));
            p.zero_grad();
        }
        return loss;
    }

    run_result loop() {
        run_result res;
        res.total_steps = total_;
        res.steps_done = step_;
        detail::signal_guard guard;
        const auto t_start = std::chrono::steady_clock::now();
        const std::int64_t first = step_;
        std::vector<tensor<float>> grads;
        while (step_ < total_) {
            const auto t0 = std::chrono::steady_clock::now();
            grad_accumulator acc{int(K_)};
            double loss_sum = 0, tokens = 0;
            for (index_t j = 0; j < K_; j++) {
                loss_sum += micro_step(micro_batch(step_ * K_ + j), grads, tokens);
                acc.push(std::move(grads));
                grads = {};
            }
            std::vector<tensor<float>> g = acc.result();
            double loss = loss_sum / double(K_);
            if (o_.on_gradients) o_.on_gradients(step_ + 1, g, loss);
            step_record r;
            r.step = step_ + 1;
            r.loss = loss;
            r.lr = lr_at(sched_, *o_.learning_rate, step_, total_, warmup_);
            r.tokens = tokens;
            if (all_finite(g, loss)) {
                r.grad_norm = o_.max_grad_norm > 0 ? clip_grad_norm(g, o_.max_grad_norm) : grad_norm(g);
                for (std::size_t k = 0; k < params_.size(); k++) params_[k].grad() = std::move(g[k]);
                opt_->step(r.lr);
                for (var& p : params_) p.zero_grad();
                nonfinite_run_ = 0;
            } else {
                r.skipped = true;
                r.grad_norm = std::numeric_limits<double>::quiet_NaN();
                nonfinite_run_++;
                if (auto* l = log())
                    *l << "\n[train] step " << r.step << ": non-finite loss or gradient; step skipped, nothing updated ("
                       << nonfinite_run_ << " in a row)\n";
            }
            step_++;
            r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            append_metrics(r);
            res.steps.push_back(r);
            res.steps_done = step_;
            ALIGNGPT_CHECK(nonfinite_run_ < o_.max_consecutive_nonfinite, "train: ", nonfinite_run_,
                           " consecutive steps with a non-finite loss or gradient (last: step ", r.step,
                           "); stopping. The last checkpoint holds finite values; lower --learning-rate or set --max-grad-norm");
            progress(r, t_start, first);
            const bool hook_stop = o_.on_step && !o_.on_step(step_);
            const bool stop = hook_stop || detail::stop_signal.load() != 0;  // a signal during this step stops after it
            if (stop || step_ == total_ || (o_.save_steps > 0 && step_ % o_.save_steps == 0)) {
                res.last_checkpoint = save_checkpoint();
                if (stop && step_ < total_) {
                    res.interrupted = true;
                    if (auto* l = log()) *l << "[train] stopped at step " << step_ << "; --resume continues from here\n";
                    return res;
                }
            }
        }
        if (auto* l = log()) *l << "\n";
        export_outputs();
        return res;
    }

    void progress(const step_record& r, std::chrono::steady_clock::time_point t_start, std::int64_t first) {
        auto* l = log();
        if (!l || (o_.logging_steps > 1 && r.step % o_.logging_steps != 0 && r.step != total_)) return;
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        const double per = el / double(step_ - first);
        const int width = 24, fill = int(double(width) * double(step_) / double(total_));
        *l << "\r[train] " << std::string(size_t(fill), '#') << std::string(size_t(width - fill), '.') << " " << step_ << "/"
           << total_ << " loss " << detail::fmt("%.4f", r.loss) << " lr " << detail::fmt("%.2e", r.lr) << " gnorm "
           << detail::fmt("%.3f", r.grad_norm) << " " << detail::fmt("%.0f", r.tokens / std::max(r.seconds, 1e-9))
           << " tok/s, left " << detail::hms(per * double(total_ - step_)) << "   " << std::flush;
    }

    // ---- exports in the reference's formats
    nlohmann::json export_config() const {
        nlohmann::json c = base_config_;
        c["architectures"] = {llava() ? "LlavaLlamaForCausalLM" : "AlignGPTForCausalLM"};
        c["model_type"] = llava() ? "llava" : "aligngpt";
        c["mm_hidden_size"] = model_->config.mm_hidden_size;
        c["mm_projector_type"] = model_->config.mm_projector_type;
        c["mm_vision_tower"] = o_.vision_tower;  // as given, as train.py writes model_args.vision_tower
        c["mm_vision_select_layer"] = vision_->select_layer;
        c["mm_vision_select_feature"] = vision_->select_feature;
        c["mm_use_im_start_end"] = false;
        c["mm_use_im_patch_token"] = false;
        c["use_mm_proj"] = true;
        c["image_aspect_ratio"] = o_.image_aspect_ratio;
        c["tokenizer_model_max_length"] = o_.model_max_length;
        c["tokenizer_padding_side"] = "right";
        c["tune_mm_mlp_adapter"] = pretrain();
        c["use_cache"] = true;
        return c;
    }
    /// The reference's key: LLaVA keeps its projector inside the LLaMA model ("model.mm_projector.*").
    std::string export_name(const std::string& name) const {
        return llava() && name.starts_with("mm_projector.") ? "model." + name : name;
    }
    void write_json(const std::string& path, const nlohmann::json& j) const {
        const std::string s = j.dump(2) + "\n";
        io::atomic_file f(path);
        f.write(s.data(), s.size());
        f.commit();
    }

    /// Stage 1: mm_projector_align.bin (the reference's file: its keys, a PyTorch zip) + the same as
    /// safetensors + config.json. Stage 2: a Hugging Face directory (config.json, model.safetensors,
    /// tokenizer files) that `aligngpt run` and the reference load.
    void export_outputs() {
        namespace fs = std::filesystem;
        const std::string out = o_.output_dir;
        write_json(out + "/config.json", export_config());
        if (pretrain()) {
            io::torch_bin_writer tw;
            io::safetensors_writer sw;
            detail::stage1_part<model_type> part{&*model_};
            part.visit([&](var& p) {
                tw.add(export_name(p.name()), p.value());
                sw.add(export_name(p.name()), p.value());
            });
            const std::string name = llava() ? "mm_projector" : "mm_projector_align";  // each reference's file name
            tw.write(out + "/" + name + ".bin");
            sw.write(out + "/" + name + ".safetensors");
            if (auto* l = log()) *l << "[train] wrote " << out << "/" << name << ".bin (stage 2: --pretrain-mm-mlp-align)\n";
            return;
        }
        io::safetensors_writer sw;
        sw.set_metadata("format", "pt");
        model_->visit([&](var& p) { sw.add(export_name(p.name()), p.value()); });
        sw.write(out + "/model.safetensors");
        for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"}) {
            const fs::path src = fs::path(o_.model_dir) / f;
            if (fs::exists(src)) fs::copy_file(src, fs::path(out) / f, fs::copy_options::overwrite_existing);
        }
        if (auto* l = log()) *l << "[train] wrote the Hugging Face directory " << out << " (aligngpt run -m " << out << ")\n";
    }
};

}  // namespace aligngpt::train
