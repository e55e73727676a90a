// Fuzz target: the `aligngpt` command line through its argument parsers (tools/aligngpt_cli.h),
// as main() runs them before any file is opened.
//
// Input: the arguments separated by NUL bytes, the subcommand first ("train\0--stage\0pretrain...").
// Entry points per subcommand: parse_trace (+ check_before_load when --input-ids is given; with
// --prompt main loads the tokenizer first, so the target stops there), parse_run + check_run_paths,
// parse_answer + check_run_paths, parse_score, parse_levels, parse_train, parse_world.
// Oracle: parsed, or refused with cli::usage_error (the tool's exit 2) whose message names an
// option ("--...") or quotes the argument it refuses (unknown option "-q" for run, unexpected
// argument "x"); any other exception is a finding.
//
// The parsers only stat and read paths, never create them. An argument that starts with "@/", or
// has "=@/" after an option name, names a path in the scratch directory ("@" is replaced by it),
// which holds what the seeds name (model/ with a config.json, img.png, images/, tower/, q.jsonl,
// data.json, proj.bin, out/), so that the seeds get past the path checks. (No chdir: libFuzzer's
// corpus and artifact paths are relative.)
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "aligngpt_cli.h"
#include "fuzz.h"

namespace {

void make_scratch_tree() {
    namespace fs = std::filesystem;
    using aligngpt::fuzz::put_file;
    const std::string& d = aligngpt::fuzz::scratch_dir();
    for (const char* sub : {"model", "images", "out", "tower"}) fs::create_directories(d + "/" + sub);
    put_file("model/config.json", R"({"vocab_size": 32000})");
    put_file("img.png", "not decoded by the parsers");
    put_file("q.jsonl", "{}\n");
    put_file("data.json", "[]");
    put_file("proj.bin", "");
}

std::vector<std::string> split_args(const std::uint8_t* data, std::size_t size) {
    std::vector<std::string> args(1);
    for (std::size_t i = 0; i < size; i++) {
        if (data[i] == 0)
            args.emplace_back();
        else
            args.back() += char(data[i]);
    }
    for (std::string& a : args) {
        const std::size_t at = a.rfind("@/", 0) == 0 ? 0 : a.find("=@/");
        if (at != std::string::npos) a.replace(at == 0 ? 0 : at + 1, 1, aligngpt::fuzz::scratch_dir());
    }
    return args;
}

void parse(const std::string& cmd, const std::vector<std::string>& rest) {
    using namespace aligngpt::cli;
    if (cmd == "trace") {
        const trace_args a = parse_trace(rest);
        if (a.ids) check_before_load(a);
    } else if (cmd == "run") {
        check_run_paths(parse_run(rest));
    } else if (cmd == "answer") {
        check_run_paths(parse_answer(rest).run);
    } else if (cmd == "score") {
        (void)parse_score(rest);
    } else if (cmd == "levels") {
        (void)parse_levels(rest);
    } else if (cmd == "train") {
        (void)parse_train(rest);
    } else if (cmd == "world") {
        (void)parse_world(rest);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool ready = (make_scratch_tree(), true);
    (void)ready;
    const std::vector<std::string> args = split_args(data, size);
    if (args.size() > 256) return 0;  // argv is the user's own; nothing to learn from more
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    try {
        parse(args[0], rest);
    } catch (const aligngpt::cli::usage_error& e) {
        const std::string m = e.what();
        const bool quotes_an_argument = std::any_of(args.begin() + 1, args.end(), [&](const std::string& a) {
            return m.find('"' + a + '"') != std::string::npos;  // unknown option "-q", unexpected argument "" (an empty one)
        });
        if (m.find("--") == std::string::npos && !quotes_an_argument) {
            std::fprintf(stderr, "aligngpt fuzz: a usage error that names no option: %s\n", m.c_str());
            std::abort();
        }
        if (std::getenv("ALIGNGPT_FUZZ_VERBOSE")) std::fprintf(stderr, "  refused: %.300s\n", m.c_str());
    }
    return 0;
}
