#pragma once
// Training curves as files that plot in one command: OUT/metrics.jsonl (trainer.h) becomes
// OUT/metrics.tsv (step, loss, lr, grad_norm, skipped) and OUT/metrics.gp, a gnuplot script that
// draws loss, learning rate and gradient norm against the step into OUT/metrics.png. gnuplot
// (Debian's gnuplot-nox, installed by scripts/setup) draws axes, labels and legends better than
// a hand-written rasteriser would; without it the .tsv and .gp files are still written and
// `gnuplot OUT/metrics.gp` draws the PNG wherever gnuplot exists.
//
//   auto r = train::plot_metrics("out/stage1");   // r.png is empty when gnuplot is absent
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"

namespace aligngpt::train {

struct plot_result {
    std::string tsv, script, png;  ///< png: "" when gnuplot is not installed
    std::size_t steps = 0;
};

namespace detail {
/// Runs `gnuplot script` without a shell; false when gnuplot cannot be started.
inline bool run_gnuplot(const std::string& script, std::string& err) {
    const char* candidates[] = {"/usr/bin/gnuplot", "/usr/local/bin/gnuplot"};
    const char* exe = nullptr;
    for (const char* c : candidates)
        if (::access(c, X_OK) == 0) exe = c;
    if (!exe) return false;
    const pid_t pid = ::fork();
    ALIGNGPT_CHECK(pid >= 0, "plot: fork failed: ", io::detail::errno_text(errno));
    if (pid == 0) {
        ::execl(exe, exe, script.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        err = std::string(exe) + " " + script + " failed (status " + std::to_string(status) + ")";
    return true;
}

inline void write_text(const std::string& path, const std::string& text) {
    io::atomic_file f(path);
    f.write(text.data(), text.size());
    f.commit();
}
}  // namespace detail

/// Reads DIR/metrics.jsonl, writes DIR/metrics.tsv and DIR/metrics.gp, runs gnuplot if present.
/// A malformed line is an error naming the file and the line.
inline plot_result plot_metrics(const std::string& dir) {
    plot_result r;
    const std::string in = dir + "/metrics.jsonl";
    std::ifstream f(in);
    ALIGNGPT_CHECK(f.good(), in, ": cannot open (is ", dir, " a training output directory?)");
    std::string tsv = "# step\tloss\tlr\tgrad_norm\tskipped\n", line;
    for (std::size_t n = 1; std::getline(f, line); n++) {
        if (line.empty()) continue;
        const auto j = nlohmann::json::parse(line, nullptr, false);
        const auto num = [&](const char* k) {
            ALIGNGPT_CHECK(j.is_object() && j.contains(k) && j[k].is_number(), in, ": line ", n, ": field \"", k,
                           "\" is missing or not a number");
            return j[k].get<double>();
        };
        const bool skipped = j.is_object() && j.value("skipped", false);
        char buf[160];
        // a skipped step's loss or norm may be non-finite (JSON null): the script leaves those rows out
        std::snprintf(buf, sizeof buf, "%lld\t%.9g\t%.9g\t%.9g\t%d\n", (long long)num("step"), skipped ? 0.0 : num("loss"),
                      num("lr"), skipped ? 0.0 : num("grad_norm"), skipped ? 1 : 0);
        tsv += buf;
        r.steps++;
    }
    ALIGNGPT_CHECK(r.steps > 0, in, ": no steps to plot");
    r.tsv = dir + "/metrics.tsv", r.script = dir + "/metrics.gp";
    detail::write_text(r.tsv, tsv);
    std::string quoted;  // a gnuplot single-quoted string: '' is a quote
    for (char c : dir) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    // Paths relative to the script's directory, so `gnuplot DIR/metrics.gp` works from anywhere.
    const std::string gp =
        "# gnuplot " + r.script +
        "  ->  metrics.png next to it (written by aligngpt plot)\n"
        "cd '" +
        quoted +
        "'\n"
        "set terminal pngcairo size 1200,900 noenhanced font ',10'\n"
        "set output 'metrics.png'\n"
        "set multiplot layout 3,1 title 'AlignGPT training: " +
        quoted +
        "'\n"
        "set grid\nset key off\nset xlabel 'optimizer step'\n"
        "set ylabel 'loss'\nplot 'metrics.tsv' using 1:($5 == 0 ? $2 : 1/0) with linespoints pt 7 ps 0.4 lc rgb '#1f77b4'\n"
        "set ylabel 'learning rate'\nplot 'metrics.tsv' using 1:3 with lines lw 2 lc rgb '#2ca02c'\n"
        "set ylabel 'gradient norm (before clipping)'\nplot 'metrics.tsv' using 1:($5 == 0 ? $4 : 1/0) with linespoints pt 7 ps "
        "0.4 lc rgb '#d62728'\n"
        "unset multiplot\n";
    detail::write_text(r.script, gp);
    std::string err;
    if (detail::run_gnuplot(r.script, err)) {
        ALIGNGPT_CHECK(err.empty(), "plot: ", err);
        r.png = dir + "/metrics.png";
    }
    return r;
}

}  // namespace aligngpt::train
