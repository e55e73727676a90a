// CLIP ViT-L/14-336 image encode, one image, fp32, seeded random weights (nn::init_uniform), next to
// PyTorch on the same machine in the same run (docs/benchmarks.md "ViT-L/14-336 encode").
//
// The work is AlignGPT's: clip_vision_model::features(pixels, select_layer = -2), i.e. the
// embeddings and 23 of the 24 encoder layers (the last layer and post_layernorm never run).
//
//   vit/threads:N  ours, aligngpt::set_threads(N); the time per iteration is seconds per image.
//   Counters (all medians over the iterations):
//     ours_s         seconds per image, ours
//     gemm_s         the 23 x 6 Linear GEMMs alone: ops::linear_forward with the model's own weights at
//                    the same shapes (577x1024 by 1024 x4, by 4096, 577x4096 by 1024), timed apart
//     attn_s         the 23 ops::attention_forward calls alone (q, k, v [577, 16 x 64])
//     nongemm_share  1 - gemm_s / ours_s  (target < 0.15, docs/benchmarks.md)
//     attn_share     attn_s / ours_s
//     torch_s        PyTorch's best variant (bench/tools/torch_vit.py: OpenBLAS or oneDNN Linear),
//                    run as a subprocess with torch.set_num_threads(N), OMP_NUM_THREADS=N,
//                    MKL_NUM_THREADS=N, OPENBLAS_NUM_THREADS=N (and OPENBLAS_CORETYPE=SKYLAKEX
//                    on AVX-512 CPUs unless set)
//     torch_blas_s, torch_onednn_s  each variant
//     ratio          ours_s / torch_s  (target <= 0.9)
//   Without /usr/bin/python3, torch or transformers the label says so and ours still runs.
//
// Environment:
//   ALIGNGPT_BENCH_SMOKE=1          tiny 2-layer model, no PyTorch (CI: seconds)
//   ALIGNGPT_BENCH_VIT_REPS=5       iterations (and PyTorch runs) per thread count
//   ALIGNGPT_BENCH_VIT_TORCH=0      skip PyTorch
//   ALIGNGPT_BENCH_VIT_PYTHON       interpreter (default /usr/bin/python3)
//   ALIGNGPT_BENCH_VIT_SCRIPT       path of torch_vit.py (default: next to this source file)
//
//   ./build-native/bench/bench_vit                        # threads 1 and 2, ~5 min on 2 cores
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

#include "aligngpt/models/clip_vision.h"
#include "aligngpt/ops/attention.h"
#include "aligngpt/ops/linear.h"
#include "aligngpt/rng.h"
#include "bench_util.h"

using namespace aligngpt;

namespace {

using clock_type = std::chrono::steady_clock;

using aligngpt_bench::env_int;
using aligngpt_bench::env_str;
using aligngpt_bench::median;
using aligngpt_bench::smoke;

constexpr index_t select_layer = -2;

models::clip_vision_config vit_config() {
    models::clip_vision_config c;
    if (smoke()) {  // 2 layers of width 64, 17 tokens
        c.hidden_size = 64, c.intermediate_size = 256, c.num_hidden_layers = 2, c.num_attention_heads = 4;
        c.image_size = 56, c.patch_size = 14;
    } else {  // openai/clip-vit-large-patch14-336
        c.hidden_size = 1024, c.intermediate_size = 4096, c.num_hidden_layers = 24, c.num_attention_heads = 16;
        c.image_size = 336, c.patch_size = 14, c.projection_dim = 768;
    }
    c.hidden_act = "quick_gelu";
    c.layer_norm_eps = 1e-5;
    return c;
}

/// The model (built once, shared by every registration) and one image.
struct vit_problem {
    models::clip_vision_config cfg = vit_config();
    models::clip_vision_model<float> model;
    autograd::variable<float> pixels;
    index_t layers_run = 0;  // encoder layers features(-2) runs
    vit_problem() {
        model = models::clip_vision_model<float>::make(cfg);
        // U(+-1/sqrt(fan_in)) for matrices (PyTorch's Linear default), U(+-0.02) for vectors and
        // embeddings; LayerNorm weights stay 1.
        model.visit([](autograd::variable<float>& p) {
            const std::string& n = p.name();
            if (n.find("norm") != std::string::npos && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0) return;
            const auto& s = p.value().shape();
            index_t fan_in = 1;
            for (size_t i = 1; i < s.size(); i++) fan_in *= s[i];
            const bool matrix = s.size() >= 2 && n.find("position_embedding") == std::string::npos;
            nn::init_uniform(p, 1234, matrix ? 1.0f / std::sqrt(float(fan_in)) : 0.02f);
        });
        tensor<float> px({1, cfg.num_channels, cfg.image_size, cfg.image_size});
        rng::fill_uniform(px.data(), px.numel(), 1234, 7, 1.0f);
        pixels = autograd::variable<float>::leaf(px);
        layers_run = models::resolve_index(select_layer, model.num_layers() + 1, "select_layer");
    }
};

vit_problem& problem() {
    static vit_problem p;
    return p;
}

template <class F>
double seconds(F&& f) {
    const auto t0 = clock_type::now();
    f();
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

/// The Linear GEMMs of the layers features() runs, alone, on the model's weights (same shapes,
/// same kernel, same weight bytes streamed); inputs and outputs are preallocated.
struct gemm_only {
    std::vector<float> x, y;
    explicit gemm_only(const vit_problem& p) {
        const index_t T = p.cfg.num_positions(), W = std::max(p.cfg.hidden_size, p.cfg.intermediate_size);
        x.resize(size_t(T * W));
        y.resize(size_t(T * W));
        rng::fill_uniform(x.data(), T * W, 1234, 11, 1.0f);
    }
    void run(const vit_problem& p) {
        const index_t T = p.cfg.num_positions();
        for (index_t l = 0; l < p.layers_run; l++) {
            const auto& L = p.model.layers[size_t(l)];
            for (const nn::linear<float>* lin : {&L.q_proj, &L.k_proj, &L.v_proj, &L.out_proj, &L.fc1, &L.fc2}) {
                const index_t N = lin->weight.size(0), K = lin->weight.size(1);
                ops::linear_forward(backend::cpu{}, y.data(), x.data(), lin->weight.value().data(), lin->bias.value().data(), T,
                                    N, K);
            }
        }
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
};

/// The attention calls of the layers features() runs, alone (one [T, D] q/k/v, output and
/// probabilities preallocated).
struct attention_only {
    std::vector<float> q, k, v, out, att;
    ops::attention_options o;
    ops::attention_dims d;
    explicit attention_only(const vit_problem& p)
        : o(make_opts(p)), d(1, p.cfg.num_positions(), p.cfg.num_positions(), int(p.cfg.head_dim()), o) {
        const index_t T = p.cfg.num_positions(), D = p.cfg.hidden_size;
        for (auto* b : {&q, &k, &v, &out}) b->resize(size_t(T * D));
        att.resize(size_t(p.cfg.num_attention_heads * T * T));
        rng::fill_uniform(q.data(), T * D, 1234, 21, 1.0f);
        rng::fill_uniform(k.data(), T * D, 1234, 22, 1.0f);
        rng::fill_uniform(v.data(), T * D, 1234, 23, 1.0f);
    }
    static ops::attention_options make_opts(const vit_problem& p) {
        ops::attention_options o;
        o.n_head = int(p.cfg.num_attention_heads);
        return o;
    }
    void run(const vit_problem& p) {
        for (index_t l = 0; l < p.layers_run; l++)
            ops::attention_forward(backend::cpu{}, out.data(), att.data(), q.data(), k.data(), v.data(), d, o);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
};

/// Runs bench/tools/torch_vit.py with N threads; fills the variant times, or `why` if it did not run.
struct torch_result {
    double best = 0, blas = 0, onednn = 0;
    std::string best_name, why;
};

double parse_field(const std::string& line, const char* key) {
    const auto at = line.find(key);
    if (at == std::string::npos) return 0;
    return std::atof(line.c_str() + at + std::string(key).size());
}

torch_result run_torch(int threads, int layers, int reps) {
    torch_result r;
    const std::string py = env_str("ALIGNGPT_BENCH_VIT_PYTHON", "/usr/bin/python3");
    std::string src = __FILE__;
    const auto slash = src.find_last_of('/');
    const std::string script =
        env_str("ALIGNGPT_BENCH_VIT_SCRIPT",
                (slash == std::string::npos ? std::string(".") : src.substr(0, slash)) + "/tools/torch_vit.py");
    for (const std::string& path : {py, script}) {
        std::FILE* f = std::fopen(path.c_str(), "r");
        if (!f) return r.why = "PyTorch not run: " + path + " not found", r;
        std::fclose(f);
    }
    const std::string env = aligngpt_bench::thread_env(threads);
    const std::string cmd = env + " '" + py + "' '" + script + "' --threads " + std::to_string(threads) + " --layers " +
                            std::to_string(layers) + " --reps " + std::to_string(reps) + " 2>&1";
    std::FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return r.why = "popen failed: " + cmd, r;
    std::array<char, 4096> buf{};
    std::string last;
    while (std::fgets(buf.data(), int(buf.size()), pipe)) {
        const std::string line(buf.data());
        if (line.rfind("torch_vit", 0) != 0) continue;  // transformers' warnings
        std::fprintf(stderr, "  %s", line.c_str());
        last = line;
        if (line.find("variant=blas ") != std::string::npos) r.blas = parse_field(line, "median_s=");
        if (line.find("variant=onednn ") != std::string::npos) r.onednn = parse_field(line, "median_s=");
        if (line.find("best=") != std::string::npos) {
            r.best = parse_field(line, "median_s=");
            const auto b = line.find("best=") + 5;
            r.best_name = line.substr(b, line.find(' ', b) - b);
        }
    }
    const int rc = pclose(pipe);
    while (!last.empty() && (last.back() == '\n' || last.back() == '\r')) last.pop_back();
    const int code = rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (r.best <= 0) r.why = "PyTorch did not run (exit " + std::to_string(code) + (last.empty() ? "" : "; " + last) + ")";
    return r;
}

void BM_vit(benchmark::State& st) {
    const int threads = int(st.range(0));
    set_threads(threads);
    vit_problem& p = problem();
    // warm-up: first-touch of the activations' pages, weights into whatever cache they fit
    benchmark::DoNotOptimize(p.model.features(nullptr, p.pixels, select_layer).value().data());

    std::vector<double> ours;
    for (auto _ : st) {
        const auto t0 = clock_type::now();
        auto f = p.model.features(nullptr, p.pixels, select_layer);
        benchmark::DoNotOptimize(f.value().data());
        ours.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
    }
    const size_t reps = ours.size();

    // the same work's pieces, timed apart (after the timed loop: not part of the reported time)
    gemm_only g(p);
    attention_only a(p);
    std::vector<double> gt, at;
    g.run(p);
    for (size_t i = 0; i < std::min<size_t>(reps, 5); i++) gt.push_back(seconds([&] { g.run(p); }));
    for (size_t i = 0; i < std::min<size_t>(reps, 3); i++) at.push_back(seconds([&] { a.run(p); }));

    const double ours_s = median(ours), gemm_s = median(gt), attn_s = median(at);
    st.counters["threads"] = max_threads();
    st.counters["layers"] = double(p.layers_run);
    st.counters["ours_s"] = ours_s;
    st.counters["gemm_s"] = gemm_s;
    st.counters["attn_s"] = attn_s;
    st.counters["nongemm_share"] = 1.0 - gemm_s / ours_s;
    st.counters["attn_share"] = attn_s / ours_s;
    // GFLOP of the Linear GEMMs per image, and their rate inside the forward (taking all of ours)
    const double T = double(p.cfg.num_positions()), D = double(p.cfg.hidden_size), I = double(p.cfg.intermediate_size);
    const double gemm_flop = double(p.layers_run) * 2.0 * T * (4.0 * D * D + 2.0 * D * I);
    st.counters["gemm_GFLOP/s"] = gemm_flop * 1e-9 / gemm_s;

    std::string label = smoke() ? "smoke: 2-layer width-64 model" : "ViT-L/14-336, 23 of 24 layers";
    if (smoke() || env_int("ALIGNGPT_BENCH_VIT_TORCH", 1) == 0) {
        label += ", PyTorch skipped";
    } else {
        const torch_result t = run_torch(threads, int(p.layers_run), int(std::max<size_t>(reps, 1)));
        if (t.best > 0) {
            st.counters["torch_s"] = t.best;
            if (t.blas > 0) st.counters["torch_blas_s"] = t.blas;
            if (t.onednn > 0) st.counters["torch_onednn_s"] = t.onednn;
            st.counters["ratio"] = ours_s / t.best;
            label += ", PyTorch best: " + t.best_name;
        } else {
            label += ", " + t.why;
        }
    }
    set_threads(threads);  // leave the pool as the benchmark found it
    st.SetLabel(label);
}

}  // namespace

int main(int argc, char** argv) {
    const bool sm = smoke();
    for (int threads : {1, 2}) {
        auto* b = benchmark::RegisterBenchmark("vit", BM_vit)
                      ->ArgName("threads")
                      ->Arg(threads)
                      ->UseRealTime()
                      ->Unit(sm ? benchmark::kMillisecond : benchmark::kSecond);
        if (!sm) b->Iterations(std::max(1, env_int("ALIGNGPT_BENCH_VIT_REPS", 5)));
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
