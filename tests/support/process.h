#pragma once
// Test support: running a command and reading what it printed (the aligngpt tool as a subprocess),
// and the message of the aligngpt::error a call throws.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <functional>
#include <string>

#include "aligngpt/config.h"

namespace support {

struct command_result {
    int code;            ///< exit status; -1 when the command did not exit normally
    std::string output;  ///< what it wrote to stdout
};

/// Runs `cmd` through the shell; stdout is captured (redirect stderr in `cmd` as needed).
inline command_result run_command(const std::string& cmd) {
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

/// The message of the aligngpt::error that f throws, or "no error".
inline std::string message_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const aligngpt::error& e) { return e.what(); }
    return "no error";
}

}  // namespace support
