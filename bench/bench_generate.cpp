// Generation speed (issue #9): one image and a question through a loaded AlignGPT, greedy decoding
// with the KV cache, next to the same in PyTorch in the same run. Figures and commands:
// docs/benchmarks.md "Generation: time to first token and decode speed (issue #9)".
//
//   BM_generate_tiny      a tiny synthetic AlignGPT (LLaMA H=64, 2 layers; CLIP hidden 32, 3 layers,
//                         336 px / 14: 576 image tokens, vocab 32000), written to a temporary
//                         directory and removed again. Always registered; the CI smoke run
//                         (ALIGNGPT_BENCH_SMOKE=1) runs it without PyTorch in about a second.
//   BM_generate_7b_bf16   OPT-IN (ALIGNGPT_BENCH_GENERATE_7B=1): the synthetic full-size AlignGPT-7B
//                         checkpoint of bench_load (synthetic_model.h: bf16 shards, CLIP ViT-L/14-336
//                         fp32 tower; ~15.4 GB in $ALIGNGPT_BENCH_DIR, default /tmp/aligngpt_bench_7b,
//                         written once and shared with bench_load), loaded as `aligngpt run` loads a
//                         model with --dtype bf16 (the LLM linears packed bf16, the rest f32).
//                         ALIGNGPT_BENCH_GENERATE_LAYERS=N keeps N of the 32 LLaMA layers (its own
//                         directory, <dir>_layersN): a check of the shapes and the code path, not a
//                         measurement.
//
// Each round: load the model, encode one synthetic 336x336 image, prefill a vicuna_v1 prompt with a
// 40-token question (token ids, no tokenizer: the template's length is counted in LLaMA pieces
// below), decode N tokens greedily (generate::greedy without an eos id: all N are decoded), release
// the model, then run bench/tools/torch_generate.py on the same shapes and sequence. The two models
// are never resident at once (a 7B needs ~14 GiB each side).
//
// Counters (medians over the rounds; decode is the median over the N steps of a round):
//   encode_s            the vision tower (hidden_states[-2], CLS dropped)
//   prefill_s           projector, gate, indicator, splice and the LLM over all `positions`
//   ttft_s              encode_s + prefill_s + the argmax of the last position: time to first token
//   decode_s_per_token  one decode_step (one token through the LLM and lm_head)
//   peak_rss_GiB        VmHWM during generation (the peak is reset after loading: /proc/self/clear_refs),
//                       the loaded model included; ru_maxrss of the process where the reset fails
//   load_s              loading the checkpoint (not in ttft_s)
//   torch_*             the same from torch_generate.py; ttft_ratio, decode_ratio = PyTorch / ours
//                       seconds (> 1: we are faster); load1: the 1-minute load average at the end
//
// Environment:
//   ALIGNGPT_BENCH_SMOKE=1                 tiny model only, 4 tokens, no PyTorch (CI)
//   ALIGNGPT_BENCH_GENERATE_7B=1           register BM_generate_7b_bf16
//   ALIGNGPT_BENCH_GENERATE_LAYERS=32      LLaMA layers of the 7B run (fewer: a shape check)
//   ALIGNGPT_BENCH_GENERATE_TOKENS=16      decoded tokens a round
//   ALIGNGPT_BENCH_GENERATE_ROUNDS=1       rounds (each loads the model anew)
//   ALIGNGPT_BENCH_GENERATE_THREADS=2      threads, both sides
//   ALIGNGPT_BENCH_GENERATE_TORCH=0        skip PyTorch
//   ALIGNGPT_BENCH_GENERATE_VISION_DTYPE   PyTorch's vision tower dtype: bfloat16 (default) or float32
//   ALIGNGPT_BENCH_PYTHON                  interpreter (default /usr/bin/python3; e.g. a PyTorch 2 venv)
//   ALIGNGPT_BENCH_GENERATE_SCRIPT         path of torch_generate.py (default: next to this source file)
//   ALIGNGPT_BENCH_DIR                     where the 7B checkpoint lives
//
//   ALIGNGPT_BENCH_GENERATE_7B=1 build/bench/bench_generate --benchmark_filter=7b --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "aligngpt/generate/greedy.h"
#include "aligngpt/pretrained.h"
#include "bench_util.h"
#include "synthetic_model.h"

namespace {

namespace fs = std::filesystem;
using namespace aligngpt;
using aligngpt_bench::model_shapes;
using clock_type = std::chrono::steady_clock;
using aligngpt_bench::env_int;
using aligngpt_bench::env_str;
using aligngpt_bench::load1;
using aligngpt_bench::median;
using aligngpt_bench::smoke;

// The vicuna_v1 prompt around the question, in LLaMA-tokenizer pieces (tokenizer_image_token):
// BOS + the system prompt (30 pieces) + " USER: " (4) up to <image>; after it "\n" (2 pieces:
// "▁" and <0x0A>), the question, " ASSISTANT:" (5). Counted by hand from the pieces of LLaMA's
// vocabulary, not by the tokenizer (none is in the repository): the count may be off by a few
// ids, which moves a 650-position prefill by well under 1%.
constexpr index_t ids_before_image = 35;
constexpr index_t template_ids_after_image = 7;
constexpr index_t question_ids = 40;

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

/// Text id i of the prompt: BOS, then the formula torch_generate.py uses (ids 3 .. V-1).
std::int64_t text_id(index_t i, index_t V) { return i == 0 ? 1 : 3 + (i * 104729) % (V - 3); }

/// BOS .. | <image> | .. question .. ASSISTANT: as ids (the image placeholder -200 in between).
std::vector<std::int64_t> prompt_ids(index_t V) {
    std::vector<std::int64_t> ids;
    const index_t after = template_ids_after_image + question_ids;
    for (index_t i = 0; i < ids_before_image + after; i++) {
        if (i == ids_before_image) ids.push_back(models::image_token_index);
        ids.push_back(text_id(i, V));
    }
    return ids;
}

// --- peak memory: VmHWM, reset by writing "5" to /proc/self/clear_refs (Linux 4.0+) ---------------

bool reset_peak_rss() {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
    f.close();
    return !f.fail();
}

/// A "Key:   N kB" line of /proc/self/status in bytes (0 if absent).
std::uint64_t proc_status_bytes(const std::string& key) {
    std::ifstream f("/proc/self/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind(key + ":", 0) == 0) return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10) * 1024;
    return 0;
}

double gib(std::uint64_t bytes) { return double(bytes) / double(1ull << 30); }

// --- our side -----------------------------------------------------------------------------------

struct round_result {
    double load_s = 0, encode_s = 0, prefill_s = 0, ttft_s = 0, decode_s = 0, peak_GiB = 0;
    index_t positions = 0;
    bool peak_reset = false;
};

/// Loads dir, generates `tokens` tokens after the prompt, and releases everything again.
round_result generate_ours(const std::string& dir, index_t tokens) {
    round_result r;
    pretrained::load_options o;
    o.quiet = true;
    o.dtype = io::weights_dtype::bf16;
    auto t0 = clock_type::now();
    auto m = pretrained::load_aligngpt<float, backend::cpu>(dir, o);
    r.load_s = seconds_since(t0);
    r.peak_reset = reset_peak_rss();
    const auto& model = *m.model;
    const index_t S = m.vision_config.image_size;

    tensor<float> pixels({1, 3, S, S});  // about the range of CLIP-normalised pixels
    rng::fill_uniform(pixels.data(), pixels.numel(), 1234, 11, 1.5f);
    t0 = clock_type::now();
    const auto feats = m.vision->features(nullptr, autograd::variable<float>::leaf(pixels));
    r.encode_s = seconds_since(t0);

    const std::vector<std::int64_t> ids = prompt_ids(model.config.llm.vocab_size);
    models::kv_cache<float> cache;
    cache.reserve(index_t(ids.size()) + model.config.n_image_tokens + 1 + tokens);  // as aligngpt_model::generate
    t0 = clock_type::now();
    const auto pre = model.forward(nullptr, {models::sample{ids}}, feats, models::stage::inference, {}, nullptr, &cache);
    r.prefill_s = seconds_since(t0);
    r.positions = pre.logits.size(1);
    t0 = clock_type::now();
    const std::int64_t first = generate::argmax_last(pre.logits);
    r.ttft_s = r.encode_s + r.prefill_s + seconds_since(t0);

    std::vector<double> steps;
    const auto out = generate::greedy(
        pre.logits,
        [&](std::int64_t token) {
            const auto s0 = clock_type::now();
            auto logits = model.llm.decode_step(token, cache);
            steps.push_back(seconds_since(s0));
            return logits;
        },
        generate::options{tokens + 1, {}});  // the first token comes from the prefill; no eos: all N decoded
    ALIGNGPT_CHECK(index_t(steps.size()) == tokens && out.front() == first, "bench_generate: ", steps.size(),
                   " decode steps for ", tokens, " tokens");
    r.decode_s = median(steps);
    r.peak_GiB = gib(r.peak_reset ? proc_status_bytes("VmHWM") : io::peak_rss_bytes());
    return r;
}

// --- the PyTorch side ---------------------------------------------------------------------------

struct torch_result {
    std::vector<round_result> rounds;
    std::string version, why;
};

/// The number after " key=" in line (NaN if absent).
double field(const std::string& line, const std::string& key) {
    const auto at = line.find(" " + key + "=");
    return at == std::string::npos ? std::nan("") : std::atof(line.c_str() + at + key.size() + 2);
}

/// One torch_generate.py process on `sh`; appends its round or says why there is none.
void run_torch(torch_result& r, const model_shapes& sh, int threads, index_t tokens) {
    const std::string py = env_str("ALIGNGPT_BENCH_PYTHON", "/usr/bin/python3");
    const std::string script =
        env_str("ALIGNGPT_BENCH_GENERATE_SCRIPT", (fs::path(__FILE__).parent_path() / "tools/torch_generate.py").string());
    for (const std::string& path : {py, script})
        if (!fs::exists(path)) return void(r.why = "PyTorch not run: " + path + " not found");
    const std::string n = std::to_string(threads);
    const std::string cmd = aligngpt_bench::thread_env(threads) + " '" + py + "' '" + script + "' --shapes " + sh.str() +
                            " --threads " + n + " --tokens " + std::to_string(tokens) + " --before " +
                            std::to_string(ids_before_image) + " --after " +
                            std::to_string(template_ids_after_image + question_ids) + " --vision-dtype " +
                            env_str("ALIGNGPT_BENCH_GENERATE_VISION_DTYPE", "bfloat16") + " 2>&1";
    std::FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return void(r.why = "popen failed: " + cmd);
    std::array<char, 8192> buf{};
    std::string last;
    bool ran = false;
    while (std::fgets(buf.data(), int(buf.size()), pipe)) {
        std::string line(buf.data());
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
        if (line.rfind("torch_generate", 0) != 0) continue;
        std::fprintf(stderr, "  %s\n", line.c_str());
        last = line;
        if (std::isnan(field(line, "decode_s_per_token"))) continue;
        ran = true;
        const auto v = line.find(" torch=");
        if (v != std::string::npos) r.version = line.substr(v + 7, line.find(' ', v + 1) - v - 7);
        round_result t;
        t.encode_s = field(line, "encode_s"), t.prefill_s = field(line, "prefill_s"), t.ttft_s = field(line, "ttft_s");
        t.decode_s = field(line, "decode_s_per_token"), t.peak_GiB = field(line, "peak_rss_GiB");
        t.positions = index_t(field(line, "positions")), t.peak_reset = field(line, "peak_reset") == 1;
        r.rounds.push_back(t);
    }
    const int rc = pclose(pipe);
    const int code = rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    if (!ran) r.why = "PyTorch did not run (exit " + std::to_string(code) + (last.empty() ? "" : "; " + last) + ")";
}

template <class F>
double median_of(const std::vector<round_result>& rounds, F&& get) {
    std::vector<double> v;
    for (const auto& r : rounds) v.push_back(get(r));
    return median(v);
}

struct workload {
    std::string label;
    model_shapes shapes;
    std::string dir;        ///< "" : a temporary directory, removed after the run
    std::string note = "";  ///< appended to the label
};

void BM_generate(benchmark::State& st, const workload& w) {
    const int threads = std::max(1, env_int("ALIGNGPT_BENCH_GENERATE_THREADS", 2));
    const index_t tokens = std::max(1, env_int("ALIGNGPT_BENCH_GENERATE_TOKENS", smoke() ? 4 : 16));
    const bool with_torch = !smoke() && env_int("ALIGNGPT_BENCH_GENERATE_TORCH", 1) != 0;
    set_threads(threads);

    std::string dir = w.dir;
    if (dir.empty()) {
        std::string tmpl = (fs::temp_directory_path() / "aligngpt_bench_generate_XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) {
            st.SkipWithError("mkdtemp failed");
            for (auto _ : st) {}
            return;
        }
        dir = tmpl;
    }
    struct remove_after {
        std::string d;
        ~remove_after() {
            std::error_code ec;
            if (!d.empty()) fs::remove_all(d, ec);
        }
    } cleanup{w.dir.empty() ? dir : std::string()};
    if (const std::string why = aligngpt_bench::ensure_checkpoint(dir, w.shapes, "bench_generate"); !why.empty()) {
        st.SkipWithError(why.c_str());
        for (auto _ : st) {}
        return;
    }

    std::vector<round_result> ours;
    torch_result t;
    for (auto _ : st) {
        round_result r;
        try {
            r = generate_ours(dir, tokens);
        } catch (const std::exception& e) {  // a bad checkpoint directory: say so, not a crash
            st.SkipWithError(e.what());
            break;
        }
        st.SetIterationTime(r.ttft_s + double(tokens) * r.decode_s);
        ours.push_back(r);
#if defined(__GLIBC__)
        ::malloc_trim(0);  // hand freed heap back before the peer allocates its own model
#endif
        if (with_torch && t.why.empty()) {
            if (gib(proc_status_bytes("VmRSS")) > 1.0)
                std::fprintf(stderr, "[bench_generate] warning: %.2f GiB still resident before PyTorch runs\n",
                             gib(proc_status_bytes("VmRSS")));
            run_torch(t, w.shapes, threads, tokens);
            set_threads(threads);
        }
    }

    const auto put = [&](const std::string& prefix, const std::vector<round_result>& rs) {
        st.counters[prefix + "encode_s"] = median_of(rs, [](const round_result& r) { return r.encode_s; });
        st.counters[prefix + "prefill_s"] = median_of(rs, [](const round_result& r) { return r.prefill_s; });
        st.counters[prefix + "ttft_s"] = median_of(rs, [](const round_result& r) { return r.ttft_s; });
        st.counters[prefix + "decode_s_per_token"] = median_of(rs, [](const round_result& r) { return r.decode_s; });
        st.counters[prefix + "peak_rss_GiB"] = median_of(rs, [](const round_result& r) { return r.peak_GiB; });
    };
    put("", ours);
    st.counters["load_s"] = median_of(ours, [](const round_result& r) { return r.load_s; });
    st.counters["positions"] = double(ours.empty() ? 0 : ours.front().positions);
    st.counters["tokens"] = double(tokens);
    st.counters["threads"] = max_threads();
    st.counters["load1"] = load1();
    std::string label = w.label + (smoke() ? " (smoke)" : "") + w.note;
    if (!ours.empty() && !ours.front().peak_reset) label += ", peak RSS = whole process (no clear_refs)";
    if (!with_torch) {
        label += ", PyTorch skipped";
    } else if (!t.rounds.empty()) {
        put("torch_", t.rounds);
        st.counters["ttft_ratio"] = st.counters["torch_ttft_s"] / st.counters["ttft_s"];
        st.counters["decode_ratio"] = st.counters["torch_decode_s_per_token"] / st.counters["decode_s_per_token"];
        label += ", PyTorch " + t.version;
        if (ours.empty() || t.rounds.front().positions != ours.front().positions) label += " (OTHER SEQUENCE LENGTH)";
    } else {
        label += ", " + t.why;
    }
    st.SetLabel(label);
}

}  // namespace

int main(int argc, char** argv) {
    const int rounds = std::max(1, env_int("ALIGNGPT_BENCH_GENERATE_ROUNDS", 1));
    static const workload tiny{"tiny", model_shapes::tiny(), ""};
    benchmark::RegisterBenchmark("BM_generate_tiny", BM_generate, tiny)
        ->Iterations(rounds)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    if (env_int("ALIGNGPT_BENCH_GENERATE_7B", 0) == 1 && !smoke()) {
        static workload big{"7b_bf16", model_shapes::aligngpt_7b(), env_str("ALIGNGPT_BENCH_DIR", "/tmp/aligngpt_bench_7b")};
        const int layers = env_int("ALIGNGPT_BENCH_GENERATE_LAYERS", 32);
        if (layers != big.shapes.layers) {
            big.shapes.layers = std::max(1, layers);
            big.dir += "_layers" + std::to_string(big.shapes.layers);
            big.note = ", " + std::to_string(big.shapes.layers) + " of 32 LLaMA layers: a shape check, not a measurement";
        }
        benchmark::RegisterBenchmark("BM_generate_7b_bf16", BM_generate, big)
            ->Iterations(rounds)
            ->UseManualTime()
            ->Unit(benchmark::kSecond);
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
