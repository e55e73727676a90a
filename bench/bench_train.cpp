// One training step (forward + backward of the loss, no optimizer), fp32, through the project's
// autograd, next to the same step in PyTorch in the same run (issue #10; docs/benchmarks.md
// "Training step"). Tokens per second = tokens in the batch / seconds per step.
//
//   train/stage1/small, train/stage2/small   a small AlignGPT (models::aligngpt_model): LLaMA H=256,
//       4 layers, 8 heads, I=688, vocab 2000; CLIP features [2, 576, 128] given as input, projector
//       mlp2x_gelu, gate over 576 tokens. Batch 2, each 64 text tokens + 576 image tokens + the
//       indicator = 641 rows (1282 tokens a step); loss = the model's token-mean cross-entropy.
//       Stage 1 = set_trainable_for(pretrain): projector + indicators (the LLM frozen, dX flows
//       through it); stage 2 = set_trainable_for(finetune): LLM + projector + gate.
//   train/stage1/7b_layer, train/stage2/7b_layer   projector Linear(1024,4096)-GELU-Linear(4096,4096)
//       and ONE LLaMA-7B decoder layer (4096, 32 heads x 128, 11008), causal, 600 tokens, loss =
//       mean of the layer's output. Stage 1 = the layer frozen (dX only); stage 2 = all trainable.
//
// Each step starts with every gradient dropped (torch: p.grad = None), records a fresh tape and
// runs backward. The same tokens, shapes and trainable sets run in bench/tools/torch_train.py.
//
// Counters (medians over the timed steps):
//   tokens      tokens a step          ours_s, torch_s       seconds per step
//   ours_tok/s, torch_tok/s            tokens per second     ratio = ours_tok/s / torch_tok/s (> 1: we are faster)
//   load1       the 1-minute load average when the benchmark ended (the host is shared)
// Ours and PyTorch alternate: ALIGNGPT_BENCH_TRAIN_ROUNDS rounds of ours (REPS steps) then one
// PyTorch process (one warm-up + REPS steps), with torch.set_num_threads(N), OMP_NUM_THREADS,
// MKL_NUM_THREADS and OPENBLAS_NUM_THREADS = N (and OPENBLAS_CORETYPE=SKYLAKEX on AVX-512 CPUs).
//
// Environment:
//   ALIGNGPT_BENCH_SMOKE=1              tiny shapes, no PyTorch (CI: seconds)
//   ALIGNGPT_BENCH_TRAIN_REPS=3         steps per round, each side
//   ALIGNGPT_BENCH_TRAIN_ROUNDS=2       rounds
//   ALIGNGPT_BENCH_TRAIN_TORCH=0        skip PyTorch
//   ALIGNGPT_BENCH_PYTHON               interpreter (default /usr/bin/python3; e.g. a PyTorch 2 venv)
//   ALIGNGPT_BENCH_TRAIN_SCRIPT         path of torch_train.py (default: next to this source file)
//
//   build/bench/bench_train --benchmark_counters_tabular=true      # ~10 min on 2 cores
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <sys/wait.h>

#include "aligngpt/models/aligngpt.h"
#include "aligngpt/ops/reduce.h"
#include "aligngpt/rng.h"
#include "bench_util.h"

using namespace aligngpt;
using var = autograd::variable<float>;

namespace {

using clock_type = std::chrono::steady_clock;
using aligngpt_bench::env_int;
using aligngpt_bench::env_str;
using aligngpt_bench::load1;
using aligngpt_bench::median;
using aligngpt_bench::smoke;

/// Shapes of both workloads; torch_train.py gets them on its command line.
struct shapes {
    // small AlignGPT
    index_t H, L, NH, I, V, Dv, P, B, n_text, n_before;  // n_before: text tokens before the image, BOS included
    // projector + one 7B-width layer
    index_t lH, lNH, lI, lDv, lT;
};

shapes problem_shapes() {
    if (smoke()) return {32, 1, 4, 64, 100, 16, 16, 2, 8, 3, 64, 4, 128, 32, 16};
    return {256, 4, 8, 688, 2000, 128, 576, 2, 64, 6, 4096, 32, 11008, 1024, 600};
}

/// Token b, i of the small batch: the same formula as torch_train.py (ids 3 .. V-1).
std::int64_t token(index_t b, index_t i, index_t V) { return 3 + (b * 7919 + i * 104729) % (V - 3); }

/// Uniform(+-a) for matrices (a = 1/sqrt(fan_in), PyTorch's Linear default), 0.02 for vectors, norms one.
template <class Module>
void init_all(Module& m, std::uint64_t seed) {
    m.visit([&](var& p) {
        const auto& s = p.value().shape();
        if (p.name().find("norm") != std::string::npos) return p.value().fill(1.0f);
        nn::init_uniform(p, seed, s.size() >= 2 ? 1.0f / std::sqrt(float(s[1])) : 0.02f);
    });
}

template <class Module>
void drop_grads(Module& m) {
    m.visit([](var& p) { p.zero_grad(); });
}

/// The small AlignGPT, its batch and features.
struct small_problem {
    shapes sh = problem_shapes();
    std::unique_ptr<models::aligngpt_model<float>> model;
    std::vector<models::sample> samples;
    var features;
    index_t tokens = 0;
    small_problem() {
        models::aligngpt_config c;
        c.llm.hidden_size = sh.H, c.llm.num_hidden_layers = sh.L, c.llm.num_attention_heads = sh.NH;
        c.llm.num_key_value_heads = sh.NH, c.llm.intermediate_size = sh.I, c.llm.vocab_size = sh.V;
        c.llm.max_position_embeddings = 4096;
        c.mm_hidden_size = sh.Dv, c.mm_projector_type = "mlp2x_gelu", c.n_image_tokens = sh.P;
        c.tokenizer_model_max_length = 2048;
        model = std::make_unique<models::aligngpt_model<float>>(c);
        init_all(*model, 1234);
        for (index_t b = 0; b < sh.B; b++) {
            models::sample s;
            s.level = b % 2 ? 7 : 3;
            for (index_t i = 0; i < sh.n_text; i++) {
                if (i == sh.n_before) s.ids.push_back(models::image_token_index), s.labels.push_back(models::ignore_index);
                const std::int64_t t = i == 0 ? 1 : token(b, i, sh.V);
                s.ids.push_back(t);
                s.labels.push_back(i < sh.n_before ? models::ignore_index : t);  // the reply after the image
            }
            samples.push_back(std::move(s));
        }
        tensor<float> f({sh.B, sh.P, sh.Dv});
        rng::fill_uniform(f.data(), f.numel(), 1234, 7, 1.0f);
        features = var::leaf(f);
        tokens = sh.B * (sh.n_text + sh.P + 1);
    }
    void step(models::stage st) {
        drop_grads(*model);
        autograd::tape<float> tp;
        const auto out = model->forward(&tp, samples, features, st);
        tp.backward(out.loss);
        benchmark::DoNotOptimize(out.loss.value().data());
    }
    void set_stage(int stage) { model->set_trainable_for(stage == 1 ? models::stage::pretrain : models::stage::finetune); }
    void run(int stage) { step(stage == 1 ? models::stage::pretrain : models::stage::finetune); }
    void release() { drop_grads(*model); }
};

/// mlp2x_gelu projector + one LLaMA-7B-width decoder layer, causal over lT tokens.
struct layer_problem {
    shapes sh = problem_shapes();
    models::llama_config cfg;
    models::projector<float> proj;
    models::llama_layer<float> layer;
    ops::rope_table rope;
    ops::attention_options att;
    std::vector<std::int64_t> pos;
    var features;
    index_t tokens = 0;
    layer_problem() {
        cfg.hidden_size = sh.lH, cfg.num_attention_heads = sh.lNH, cfg.num_key_value_heads = sh.lNH;
        cfg.intermediate_size = sh.lI, cfg.num_hidden_layers = 1;
        proj = models::projector<float>::make("mlp2x_gelu", sh.lDv, sh.lH);
        layer = models::llama_layer<float>::make(cfg, 0);
        init_all(proj, 1234), init_all(layer, 1234);
        rope = ops::rope_table(int(cfg.head_dim()), cfg.rope_theta, cfg.rope_scaling);
        att.n_head = att.n_kv_head = int(sh.lNH);
        att.causal = true;
        att.past = 0;
        for (index_t t = 0; t < sh.lT; t++) pos.push_back(t);
        tensor<float> f({1, sh.lT, sh.lDv});
        rng::fill_uniform(f.data(), f.numel(), 1234, 9, 1.0f);
        features = var::leaf(f);
        tokens = sh.lT;
    }
    void set_stage(int stage) { nn::set_trainable(proj, true), nn::set_trainable(layer, stage == 2); }
    void run(int) {
        drop_grads(proj), drop_grads(layer);
        autograd::tape<float> tp;
        const auto loss = ag::mean(&tp, layer(&tp, proj(&tp, features), pos, rope, att));
        tp.backward(loss);
        benchmark::DoNotOptimize(loss.value().data());
    }
    void release() { drop_grads(proj), drop_grads(layer); }
};

small_problem& small() {
    static small_problem p;
    return p;
}
layer_problem& layer7b() {
    static layer_problem p;
    return p;
}

struct torch_result {
    std::vector<double> steps;
    std::string version, why;
};

/// One PyTorch process: one warm-up step and `reps` timed steps of `workload`; appends their times.
void run_torch(torch_result& r, const std::string& workload, int threads, int reps) {
    const std::string py = env_str("ALIGNGPT_BENCH_PYTHON", "/usr/bin/python3");
    std::string src = __FILE__;
    const auto slash = src.find_last_of('/');
    const std::string script =
        env_str("ALIGNGPT_BENCH_TRAIN_SCRIPT",
                (slash == std::string::npos ? std::string(".") : src.substr(0, slash)) + "/tools/torch_train.py");
    for (const std::string& path : {py, script}) {
        std::FILE* f = std::fopen(path.c_str(), "r");
        if (!f) return void(r.why = "PyTorch not run: " + path + " not found");
        std::fclose(f);
    }
    const std::string n = std::to_string(threads);
    const std::string env = aligngpt_bench::thread_env(threads);
    const shapes s = problem_shapes();
    std::string dims;
    for (index_t d : {s.H, s.L, s.NH, s.I, s.V, s.Dv, s.P, s.B, s.n_text, s.n_before, s.lH, s.lNH, s.lI, s.lDv, s.lT})
        dims += (dims.empty() ? std::string() : std::string(",")) + std::to_string(d);
    const std::string cmd = env + " '" + py + "' '" + script + "' --workload " + workload + " --threads " + n + " --reps " +
                            std::to_string(reps) + " --shapes " + dims + " 2>&1";
    std::FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return void(r.why = "popen failed: " + cmd);
    std::array<char, 4096> buf{};
    std::string last;
    bool ran = false;
    while (std::fgets(buf.data(), int(buf.size()), pipe)) {
        const std::string line(buf.data());
        if (line.rfind("torch_train", 0) != 0) continue;
        std::fprintf(stderr, "  %s", line.c_str());
        last = line;
        if (line.find("median_s=") == std::string::npos) continue;
        ran = true;
        const auto v = line.find("torch=");
        if (v != std::string::npos) r.version = line.substr(v + 6, line.find(' ', v) - v - 6);
        const auto runs = line.find("runs=");
        for (size_t at = runs + 5; runs != std::string::npos && at < line.size();) {
            r.steps.push_back(std::atof(line.c_str() + at));
            const auto comma = line.find(',', at);
            if (comma == std::string::npos) break;
            at = comma + 1;
        }
    }
    const int rc = pclose(pipe);
    while (!last.empty() && (last.back() == '\n' || last.back() == '\r')) last.pop_back();
    const int code = rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (!ran) r.why = "PyTorch did not run (exit " + std::to_string(code) + (last.empty() ? "" : "; " + last) + ")";
}

template <class Problem>
void BM_train(benchmark::State& st, Problem& (*get)(), int stage, std::string workload) {
    const int threads = int(st.range(0));
    set_threads(threads);
    Problem& p = get();
    p.set_stage(stage);
    p.run(stage);  // warm-up: first touch of the activations' and gradients' pages

    const int reps = std::max(1, env_int("ALIGNGPT_BENCH_TRAIN_REPS", smoke() ? 1 : 3));
    const bool with_torch = !smoke() && env_int("ALIGNGPT_BENCH_TRAIN_TORCH", 1) != 0;
    std::vector<double> ours;
    torch_result t;
    for (auto _ : st) {
        const auto t0 = clock_type::now();
        p.run(stage);
        ours.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
        if (with_torch && ours.size() % size_t(reps) == 0 && t.why.empty()) {  // end of a round: PyTorch's turn
            st.PauseTiming();
            p.release();  // its gradients need not sit in memory meanwhile
            run_torch(t, workload, threads, reps);
            set_threads(threads);
            st.ResumeTiming();
        }
    }
    p.release();

    const double ours_s = median(ours), tok = double(p.tokens);
    st.counters["threads"] = max_threads();
    st.counters["tokens"] = tok;
    st.counters["ours_s"] = ours_s;
    st.counters["ours_tok/s"] = tok / ours_s;
    st.counters["load1"] = load1();
    std::string label = smoke() ? "smoke: tiny shapes" : workload;
    if (!with_torch) {
        label += ", PyTorch skipped";
    } else if (!t.steps.empty()) {
        const double torch_s = median(t.steps);
        st.counters["torch_s"] = torch_s;
        st.counters["torch_tok/s"] = tok / torch_s;
        st.counters["ratio"] = torch_s / ours_s;
        label += ", PyTorch " + t.version;
    } else {
        label += ", " + t.why;
    }
    st.SetLabel(label);
}

}  // namespace

int main(int argc, char** argv) {
    const bool sm = smoke();
    const int iters = std::max(1, env_int("ALIGNGPT_BENCH_TRAIN_REPS", sm ? 1 : 3)) *
                      std::max(1, env_int("ALIGNGPT_BENCH_TRAIN_ROUNDS", sm ? 1 : 2));
    for (int threads : {1, 2}) {
        for (int stage : {1, 2}) {
            const std::string w = "stage" + std::to_string(stage) + "/small";
            benchmark::RegisterBenchmark(("train/" + w).c_str(), BM_train<small_problem>, &small, stage, w)
                ->ArgName("threads")
                ->Arg(threads)
                ->UseRealTime()
                ->Iterations(iters)
                ->Unit(benchmark::kMillisecond);
        }
        for (int stage : {1, 2}) {
            const std::string w = "stage" + std::to_string(stage) + "/7b_layer";
            benchmark::RegisterBenchmark(("train/" + w).c_str(), BM_train<layer_problem>, &layer7b, stage, w)
                ->ArgName("threads")
                ->Arg(threads)
                ->UseRealTime()
                ->Iterations(iters)
                ->Unit(sm ? benchmark::kMillisecond : benchmark::kSecond);
        }
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
