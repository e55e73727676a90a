// train/checkpoint.h: the commit protocol under kills (F1), failed writes (F3), its fsync/rename
// order (F4), damaged files (F5), the non-finite guard (F6) and refusing a mismatched
// configuration (F9), all with tiny checkpoints in support::scratch_dir(). Kills are real: a fork()ed
// child saves with a hook that _exit()s at step i, and the parent resumes.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "aligngpt/train/checkpoint.h"

#include "support/scratch_dir.h"

namespace test_train_checkpoint {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
    const std::string d = support::scratch_dir() + "/train_checkpoint/" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

std::vector<std::string> names_in(const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

bool has_staging(const std::string& dir) {
    for (const auto& n : names_in(dir))
        if (n.rfind("tmp-checkpoint-", 0) == 0) return true;
    return false;
}

std::string read_all(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}
void write_all(const std::string& p, const std::string& s) { std::ofstream(p, std::ios::binary | std::ios::trunc) << s; }

/// A tiny training state whose every value depends on the step, so a checkpoint's content says
/// which save wrote it.
struct state {
    std::map<std::string, tensor<float>> params, moments;
    nlohmann::json trainer;
    std::string blob;
};
state make_state(std::int64_t step) {
    state s;
    const float b = float(step);
    s.params["mm_projector.0.weight"] = tensor<float>::from({b, b + 0.5f, -b, 1e-3f * b, 2.f, 3.f}, {2, 3});
    s.params["align_indicator.weight"] = tensor<float>::from({b * 2, 7.f, -1.f, 0.25f}, {4});
    s.moments["mm_projector.0.weight.exp_avg"] = tensor<float>::from({b, 1.f, 2.f, 3.f, 4.f, 5.f}, {2, 3});
    s.moments["mm_projector.0.weight.exp_avg_sq"] = tensor<float>::from({b * b, 1.f, 2.f, 3.f, 4.f, 5.f}, {2, 3});
    s.trainer = {{"step", step}, {"lr", 2e-5}, {"rng", {{"seed", 42}, {"counter", step * 3}}}, {"data_cursor", step * 16}};
    s.blob = "stage1-export-" + std::to_string(step);
    return s;
}

std::string save(const std::string& out, std::int64_t step, std::size_t keep = 0, train::checkpoint_hooks hooks = {}) {
    const state s = make_state(step);
    train::checkpoint_writer w(out, step, std::move(hooks));
    w.add_tensors("model.safetensors", s.params);
    w.add_tensors("optimizer.safetensors", s.moments);
    w.add_json("trainer_state.json", s.trainer);
    w.add_bytes("stage1.bin", s.blob);
    return w.commit(keep);
}

/// Hooks for the tests that save hundreds of times: no real fsync (see checkpoint_hooks::skip_fsync).
train::checkpoint_hooks quick(std::size_t write_chunk = std::size_t(8) << 20) {
    train::checkpoint_hooks h;
    h.skip_fsync = true;
    h.write_chunk = write_chunk;
    return h;
}

/// The checkpoint holds exactly what save(step) wrote, bit for bit.
void check_content(const train::checkpoint& ck, std::int64_t step) {
    const state s = make_state(step);
    CHECK(ck.step() == step);
    const io::safetensors_file m = ck.tensors("model.safetensors");
    CHECK(m.tensors().size() == s.params.size());
    for (const auto& [name, t] : s.params) {
        const std::vector<float> got = m.read_as<float>(name), want = t.to_vector();
        CHECK(std::memcmp(got.data(), want.data(), want.size() * 4) == 0);
        CHECK(m.at(name).shape == t.shape());
    }
    const io::safetensors_file o = ck.tensors("optimizer.safetensors");
    for (const auto& [name, t] : s.moments) CHECK(o.read_as<float>(name) == t.to_vector());
    CHECK(ck.json("trainer_state.json") == s.trainer);
    CHECK(ck.bytes("stage1.bin") == s.blob);
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const aligngpt::error& e) { return e.what(); }
    return "";
}

}  // namespace

TEST_CASE("checkpoint: sha256 matches the FIPS 180-4 test vectors, fed in any chunking") {
    const auto hash = [](const std::string& s, std::size_t chunk) {
        train::sha256 h;
        for (std::size_t i = 0; i < s.size(); i += chunk) h.update(s.data() + i, std::min(chunk, s.size() - i));
        return h.hex();
    };
    for (std::size_t chunk : {std::size_t(1), std::size_t(7), std::size_t(64), std::size_t(1000)}) {
        CHECK(hash("", chunk) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        CHECK(hash("abc", chunk) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        CHECK(hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", chunk) ==
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }
    CHECK(hash(std::string(1000000, 'a'), 4093) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("checkpoint: save, find and read back bit for bit; the tensor files pass the strict safetensors reader") {
    const std::string out = fresh_dir("roundtrip");
    const std::string dir = save(out, 10);
    CHECK(dir == out + "/checkpoint-10");
    CHECK(names_in(out) == std::vector<std::string>{"checkpoint-10"});
    CHECK(names_in(dir) == std::vector<std::string>{"manifest.json", "model.safetensors", "optimizer.safetensors", "stage1.bin",
                                                    "trainer_state.json"});
    train::resume_report r;
    auto ck = train::find_resumable(out, &r);
    REQUIRE(ck);
    CHECK(ck->dir() == dir);
    check_content(*ck, 10);
    CHECK(r.text() == "resuming from checkpoint-10\n");
    CHECK(ck->files().size() == 4);
    CHECK(error_of([&] { (void)ck->path("scheduler.pt"); }).find("no file \"scheduler.pt\"") != std::string::npos);
    // Every tensor starts 8-byte aligned (the header is padded as the reference writer pads it).
    const io::safetensors_file m = ck->tensors("model.safetensors");
    for (const auto& t : m.tensors()) CHECK(reinterpret_cast<std::uintptr_t>(m.data(t)) % 8 == 0);

    CHECK_FALSE(train::find_resumable(out + "/does-not-exist"));
    train::resume_report none;
    CHECK_FALSE(train::find_resumable(fresh_dir("empty"), &none));
    CHECK(none.text().empty());
}

TEST_CASE("checkpoint: keep_total_limit keeps the K newest (0 keeps all); higher steps of an abandoned run are left") {
    const std::string out = fresh_dir("rotate");
    for (int s : {10, 20, 30}) save(out, s);
    CHECK(names_in(out) == std::vector<std::string>{"checkpoint-10", "checkpoint-20", "checkpoint-30"});
    save(out, 40, 2);
    CHECK(names_in(out) == std::vector<std::string>{"checkpoint-30", "checkpoint-40"});
    save(out, 50, 1);
    CHECK(names_in(out) == std::vector<std::string>{"checkpoint-50"});
    // Resumed from 20 after 50 was found damaged: saving 30 with K=1 never deletes the new save.
    save(out, 20);
    save(out, 30, 1);
    CHECK(names_in(out) == std::vector<std::string>{"checkpoint-30", "checkpoint-50"});
}

TEST_CASE("checkpoint: an existing checkpoint-<step> is replaced whole, by exchange or (fallback) renamed aside first") {
    for (bool exchange : {true, false}) {
        CAPTURE(exchange);
        const std::string out = fresh_dir("replace");
        save(out, 10);
        // A damaged checkpoint-20 (say, from before a crash); the new save replaces it.
        fs::create_directories(out + "/checkpoint-20");
        write_all(out + "/checkpoint-20/model.safetensors", "junk");
        std::vector<std::string> ops;
        train::checkpoint_hooks h;
        h.before = [&](const train::fs_step& s) { return !exchange && s.op == train::fs_op::exchange ? EINVAL : 0; };
        h.after = [&](const train::fs_step& s) { ops.push_back(train::fs_op_name(s.op)); };
        save(out, 20, 0, h);
        CHECK(std::count(ops.begin(), ops.end(), "exchange") == (exchange ? 1 : 0));
        CHECK(names_in(out) == std::vector<std::string>{"checkpoint-10", "checkpoint-20"});
        auto ck = train::find_resumable(out);
        REQUIRE(ck);
        check_content(*ck, 20);
    }
}

TEST_CASE("checkpoint: F4 fsync(file) before its rename, manifest last, fsync(dir) before publishing and after, deletes last") {
    const std::string out = fresh_dir("order");
    save(out, 10);
    save(out, 20);
    std::vector<train::fs_step> log;
    train::checkpoint_hooks h;
    h.after = [&](const train::fs_step& s) { log.push_back(s); };
    save(out, 30, 2, h);
    const auto find = [&](train::fs_op op, const std::string& path_end, std::size_t from = 0) {
        for (std::size_t i = from; i < log.size(); i++)
            if (log[i].op == op && log[i].path.size() >= path_end.size() &&
                log[i].path.compare(log[i].path.size() - path_end.size(), path_end.size(), path_end) == 0)
                return i;
        return std::size_t(-1);
    };
    for (const std::string f :
         {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "stage1.bin", "manifest.json"}) {
        CAPTURE(f);
        const std::size_t sync = find(train::fs_op::fsync_file, "/" + f + ".tmp");
        const std::size_t close = find(train::fs_op::close, "/" + f + ".tmp");
        const std::size_t ren = find(train::fs_op::rename, "/" + f + ".tmp");
        REQUIRE(sync != std::size_t(-1));
        CHECK(sync < close);
        CHECK(close < ren);
        CHECK(log[ren].to.substr(log[ren].to.size() - f.size()) == f);
        CHECK(ren <= find(train::fs_op::rename, "/manifest.json.tmp"));  // the manifest is renamed last
    }
    const std::size_t manifest = find(train::fs_op::rename, "/manifest.json.tmp");
    const std::size_t sync_stage = find(train::fs_op::fsync_dir, "", manifest);
    REQUIRE(sync_stage == manifest + 1);
    CHECK(log[sync_stage].path.find("/tmp-checkpoint-30-") != std::string::npos);
    const train::fs_step& publish = log[sync_stage + 1];
    CHECK(publish.op == train::fs_op::rename);
    CHECK(publish.to == out + "/checkpoint-30");
    CHECK(log[sync_stage + 2].op == train::fs_op::fsync_dir);
    CHECK(log[sync_stage + 2].path == out);
    // Only then the oldest goes: renamed aside (atomic), then removed.
    REQUIRE(log.size() == sync_stage + 5);
    CHECK(log[sync_stage + 3].op == train::fs_op::rename);
    CHECK(log[sync_stage + 3].path == out + "/checkpoint-10");
    CHECK(log[sync_stage + 4].op == train::fs_op::remove);
    // No write, fsync or rename touches OUT outside the staging dir before the publish.
    for (std::size_t i = 0; i < sync_stage + 1; i++)
        if (log[i].op != train::fs_op::mkdir) CHECK(log[i].path.find("/tmp-checkpoint-30-") != std::string::npos);
}

TEST_CASE(
    "checkpoint: F1 killed at every step of a save (>= 200 points): resume picks the newest complete one, then saving works") {
    const std::string out = fresh_dir("kill");
    save(out, 5, 0, quick());
    save(out, 10, 0, quick());
    // Every file-system step of one save (6-byte write chunks, so kills land inside every file),
    // including the pruning of checkpoint-5 (K = 2).
    std::vector<train::fs_step> steps;
    train::checkpoint_hooks count = quick(6);
    count.before = [&](const train::fs_step& s) {
        steps.push_back(s);
        return 0;
    };
    save(out, 20, 2, count);
    std::size_t published = 0;  // index of the step that renames the staging dir to checkpoint-20
    for (std::size_t i = 0; i < steps.size(); i++)
        if (steps[i].op == train::fs_op::rename && steps[i].to == out + "/checkpoint-20") published = i;
    REQUIRE(published > 0);
    CHECK(steps.size() >= 200);
    std::map<std::string, int> phases;
    for (const auto& s : steps) phases[train::fs_op_name(s.op)]++;
    CHECK(phases.size() == 8);  // mkdir create write fsync_file close rename fsync_dir remove
    MESSAGE(steps.size(), " kill points");

    int failures = 0;
    for (std::size_t kill = 0; kill <= steps.size(); kill++) {
        CAPTURE(kill);
        fs::remove_all(out + "/checkpoint-20");
        if (!fs::exists(out + "/checkpoint-5")) save(out, 5, 0, quick());
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            std::size_t n = 0;
            train::checkpoint_hooks h = quick(6);
            h.before = [&](const train::fs_step&) {
                if (n++ == kill) ::_exit(0);  // SIGKILL-like: no destructor, no cleanup runs
                return 0;
            };
            try {
                save(out, 20, 2, h);
            } catch (...) { ::_exit(2); }
            ::_exit(kill == steps.size() ? 0 : 3);  // the save finished without reaching the kill
        }
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        REQUIRE(WIFEXITED(status));
        REQUIRE(WEXITSTATUS(status) == 0);

        train::remove_stale_staging(out);
        CHECK_FALSE(has_staging(out));
        train::resume_report r;
        auto ck = train::find_resumable(out, &r);
        REQUIRE(ck);
        CHECK(r.skipped_dirs.empty());  // never a half checkpoint under a checkpoint-<N> name
        const std::int64_t want = kill > published ? 20 : 10;
        if (ck->step() != want) failures++;
        check_content(*ck, ck->step());
        // The older ones are intact too, unless the pruning got to checkpoint-5.
        check_content(train::checkpoint::open(out + "/checkpoint-10"), 10);
        if (kill <= published) check_content(train::checkpoint::open(out + "/checkpoint-5"), 5);
        // And the run goes on: the next save works.
        save(out, 20, 0, quick());
        auto again = train::find_resumable(out);
        REQUIRE(again);
        check_content(*again, 20);
    }
    CHECK(failures == 0);
}

TEST_CASE("checkpoint: F1 killed at every step of replacing a damaged checkpoint-<step>, by exchange and by the fallback") {
    const std::string out = fresh_dir("kill_replace");
    save(out, 10, 0, quick());
    for (bool exchange : {true, false}) {
        CAPTURE(exchange);
        const auto hooks = [&](std::size_t* n, std::size_t kill) {
            train::checkpoint_hooks h = quick();
            h.before = [=](const train::fs_step& s) {
                if ((*n)++ == kill) ::_exit(0);
                return !exchange && s.op == train::fs_op::exchange ? EINVAL : 0;
            };
            return h;
        };
        const auto damaged_20 = [&] {
            fs::remove_all(out + "/checkpoint-20");
            fs::create_directories(out + "/checkpoint-20");
            write_all(out + "/checkpoint-20/model.safetensors", "junk");
        };
        damaged_20();
        std::size_t total = 0;
        save(out, 20, 0, hooks(&total, std::size_t(-1)));
        for (std::size_t kill = 0; kill < total; kill++) {
            CAPTURE(kill);
            damaged_20();
            const pid_t pid = ::fork();
            REQUIRE(pid >= 0);
            if (pid == 0) {
                std::size_t n = 0;
                try {
                    save(out, 20, 0, hooks(&n, kill));
                } catch (...) { ::_exit(2); }
                ::_exit(3);
            }
            int status = 0;
            REQUIRE(::waitpid(pid, &status, 0) == pid);
            REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
            train::remove_stale_staging(out);
            CHECK_FALSE(has_staging(out));
            auto ck = train::find_resumable(out);
            REQUIRE(ck);
            check_content(*ck, ck->step());  // the new checkpoint-20 whole, or checkpoint-10
            save(out, 20, 0, quick());
            check_content(*train::find_resumable(out), 20);
        }
    }
}

TEST_CASE("checkpoint: F3 every injected I/O error is reported with path and errno; the previous checkpoint stays newest") {
    const std::string out = fresh_dir("enospc");
    save(out, 10);
    // ENOSPC after N bytes of any one file, at byte counts in the header, the data and the manifest.
    for (const std::string file :
         {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "stage1.bin", "manifest.json"}) {
        for (std::uint64_t limit : {0, 1, 8, 20, 100, 150}) {
            CAPTURE(file);
            CAPTURE(limit);
            train::checkpoint_hooks h = quick(16);
            bool hit = false;
            h.before = [&](const train::fs_step& s) {
                if (s.op != train::fs_op::write || s.path.find("/" + file + ".tmp") == std::string::npos) return 0;
                if (s.offset + s.bytes <= limit) return 0;
                hit = true;
                return ENOSPC;
            };
            const std::string msg = error_of([&] { save(out, 20, 1, h); });
            if (!hit) {  // the file is shorter than the limit: the save went through
                CHECK(msg.empty());
                fs::remove_all(out + "/checkpoint-20");
                save(out, 10, 0, quick());
                continue;
            }
            CHECK(msg.find(out + "/tmp-checkpoint-20-") != std::string::npos);
            CHECK(msg.find(file + ".tmp") != std::string::npos);
            CHECK(msg.find("No space left on device") != std::string::npos);
            CHECK(names_in(out) == std::vector<std::string>{"checkpoint-10"});  // staging dir removed
            auto ck = train::find_resumable(out);
            REQUIRE(ck);
            check_content(*ck, 10);
        }
    }
    // EIO at every step in turn (create, write, fsync, close, rename, exchange, mkdir, remove): each is reported.
    std::size_t total = 0;
    {
        train::checkpoint_hooks count = quick();
        count.before = [&](const train::fs_step&) { return int(total++ * 0); };
        save(out, 20, 0, count);
        fs::remove_all(out + "/checkpoint-20");
    }
    for (std::size_t at = 0; at < total; at++) {
        CAPTURE(at);
        std::size_t n = 0;
        train::checkpoint_hooks h = quick();
        std::string failed_path;
        train::fs_op failed_op{};
        h.before = [&](const train::fs_step& s) {
            if (n++ != at) return 0;
            failed_path = s.path, failed_op = s.op;
            return EIO;
        };
        const std::string msg = error_of([&] { save(out, 20, 1, h); });
        CHECK(msg.find(failed_path) != std::string::npos);
        CHECK(msg.find("Input/output error") != std::string::npos);
        train::remove_stale_staging(out);
        auto ck = train::find_resumable(out);
        REQUIRE(ck);
        // Errors before the publish leave checkpoint-10 newest; after it (fsync of OUT, pruning)
        // the new checkpoint is complete and is the one found.
        const bool before_publish = failed_op != train::fs_op::fsync_dir || failed_path != out;
        if (ck->step() == 20) CHECK(!before_publish);
        check_content(*ck, ck->step());
        fs::remove_all(out + "/checkpoint-20");
        if (!fs::exists(out + "/checkpoint-10")) save(out, 10, 0, quick());
    }
}

TEST_CASE("checkpoint: F3 a real EFBIG from RLIMIT_FSIZE fails the save cleanly (fork: the limit stays in the child)") {
    const std::string out = fresh_dir("fsize");
    save(out, 10);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing the process
        const rlimit lim{100, 100};
        if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) ::_exit(4);
        const std::string msg = error_of([&] { save(out, 20); });
        const bool ok =
            msg.find("File too large") != std::string::npos && msg.find("/model.safetensors.tmp") != std::string::npos;
        ::_exit(ok ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(names_in(out) == std::vector<std::string>{"checkpoint-10"});
    auto ck = train::find_resumable(out);
    REQUIRE(ck);
    check_content(*ck, 10);
}

TEST_CASE("checkpoint: F5 every single-bit flip and every truncation of every file is detected, naming the file; falls back") {
    const std::string out = fresh_dir("flip");
    save(out, 10);
    const std::string dir = save(out, 20);
    int flips = 0, missed = 0;
    for (const std::string f :
         {"manifest.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json", "stage1.bin"}) {
        CAPTURE(f);
        const std::string path = dir + "/" + f;
        const std::string good = read_all(path);
        const auto expect_fallback = [&](const std::string& what) {
            train::resume_report r;
            auto ck = train::find_resumable(out, &r);
            const bool ok = ck && ck->step() == 10 && r.skipped_dirs.size() == 1 &&
                            r.skipped_dirs[0].reason.find(dir + "/") != std::string::npos &&
                            r.text().find("falling back to checkpoint-10\n") != std::string::npos &&
                            (f == "manifest.json" || r.skipped_dirs[0].reason.find(path + ": " + what) != std::string::npos);
            if (!ok) {
                missed++;
                INFO(r.text());
                CHECK(ok);
            }
        };
        const int fd = ::open(path.c_str(), O_WRONLY);
        REQUIRE(fd >= 0);
        for (std::size_t bit = 0; bit < good.size() * 8; bit++) {
            const char flipped = char(good[bit / 8] ^ (1 << (bit % 8)));
            REQUIRE(::pwrite(fd, &flipped, 1, off_t(bit / 8)) == 1);
            // Every flip: verifying checkpoint-20 fails naming the file (for the manifest, the file
            // whose check failed); one bit per byte also goes through the whole fallback.
            const std::string why = error_of([&] { (void)train::checkpoint::open(dir); });
            if (why.find(dir + "/" + (f == "manifest.json" ? "" : f + ": sha256 mismatch (file damaged)")) == std::string::npos) {
                missed++;
                CHECK(why == "detected");
            }
            if (bit % 8 == (bit / 8) % 8) expect_fallback("sha256 mismatch (file damaged)");
            REQUIRE(::pwrite(fd, &good[bit / 8], 1, off_t(bit / 8)) == 1);
            flips++;
        }
        ::close(fd);
        for (std::size_t len = good.size(); len-- > 0;) {
            REQUIRE(::truncate(path.c_str(), off_t(len)) == 0);
            expect_fallback("truncated");
        }
        write_all(path, good + " ");
        expect_fallback("longer than written");
        write_all(path, good);
        CHECK(train::find_resumable(out)->step() == 20);
    }
    CHECK(flips > 8000);
    CHECK(missed == 0);
}

TEST_CASE("checkpoint: a directory is a checkpoint only by name and a manifest that verifies") {
    const std::string out = fresh_dir("names");
    save(out, 10);
    const std::string d20 = save(out, 20);
    // Staging dirs, other spellings of the step and non-directories are never chosen.
    fs::rename(d20, out + "/tmp-checkpoint-30-1-0");
    fs::copy(out + "/tmp-checkpoint-30-1-0", out + "/checkpoint-030");
    fs::copy(out + "/tmp-checkpoint-30-1-0", out + "/checkpoint-+40");
    fs::copy(out + "/tmp-checkpoint-30-1-0", out + "/checkpoint-50.bak");
    write_all(out + "/checkpoint-60", "a file");
    train::resume_report r;
    auto ck = train::find_resumable(out, &r);
    REQUIRE(ck);
    CHECK(ck->step() == 10);
    REQUIRE(r.skipped_dirs.size() == 1);
    CHECK(r.skipped_dirs[0].reason.find(out + "/checkpoint-60: not a directory") != std::string::npos);
    fs::remove(out + "/checkpoint-60");
    CHECK(train::remove_stale_staging(out) == std::vector<std::string>{out + "/tmp-checkpoint-30-1-0"});

    const auto skipped_because = [&](const std::string& why) {
        train::resume_report rr;
        auto c = train::find_resumable(out, &rr);
        REQUIRE(c);
        CHECK(c->step() == 10);
        REQUIRE(rr.skipped_dirs.size() == 1);
        INFO(rr.text());
        CHECK(rr.skipped_dirs[0].reason.find(why) != std::string::npos);
    };
    const std::string d = save(out, 20);
    const std::string man = read_all(d + "/manifest.json");
    // A copy under another step's name: the manifest's step says which it is.
    fs::rename(d, out + "/checkpoint-21");
    skipped_because(out + "/checkpoint-21/manifest.json: field 'step' is 20 but the directory is checkpoint-21");
    fs::rename(out + "/checkpoint-21", d);
    fs::remove(d + "/manifest.json");
    skipped_because(d + "/manifest.json: missing (the save did not finish)");
    const auto with_manifest = [&](const std::string& text, const std::string& why) {
        write_all(d + "/manifest.json", text);
        skipped_because(why);
    };
    with_manifest(man + " ", "not in the canonical form");
    std::string v2 = man;
    v2.replace(v2.find("\"version\": 1"), 12, "\"version\": 2");
    with_manifest(v2, "format version 2 is not supported (this build reads 1)");
    with_manifest(std::string(2 << 20, ' '), "more than the limit of 1048576");  // refused before reading it
    with_manifest("{\"format\":\"aligngpt-checkpoint\",\"version\":1,\"step\":20,\"files\":{\"../x\":{\"bytes\":0,\"sha256\":\"" +
                      std::string(64, '0') + "\"}}}",
                  "files.\"../x\": not a plain file name");
    with_manifest("{\"a\":1,\"a\":2}", "duplicate");
    write_all(d + "/manifest.json", man);
    fs::remove(d + "/stage1.bin");
    skipped_because(d + "/stage1.bin: missing (listed in the manifest)");
    fs::create_symlink(out + "/checkpoint-10/stage1.bin", d + "/stage1.bin");
    skipped_because(d + "/stage1.bin: cannot open");  // O_NOFOLLOW: a link is not a checkpoint's file
    fs::remove(d + "/stage1.bin");
    CHECK_FALSE(error_of([&] { (void)train::checkpoint::open(d); }).empty());
}

TEST_CASE("checkpoint: F6 NaN/Inf are refused naming the tensor (unless allowed), and the failed save leaves nothing") {
    const std::string out = fresh_dir("nonfinite");
    save(out, 10);
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
        state s = make_state(20);
        s.params["align_indicator.weight"] = tensor<float>::from({1.f, 2.f, bad, 4.f}, {4});
        train::checkpoint_writer w(out, 20);
        const std::string msg = error_of([&] { w.add_tensors("model.safetensors", s.params); });
        CHECK(msg.find("model.safetensors: tensor \"align_indicator.weight\" holds ") != std::string::npos);
        CHECK(msg.find("at element 2 of 4") != std::string::npos);
        CHECK(names_in(out) == std::vector<std::string>{"checkpoint-10"});
        CHECK(error_of([&] { w.add_json("trainer_state.json", {}); }).find("used after a failed step") != std::string::npos);
        CHECK(error_of([&] { w.commit(); }).find("used after a failed step") != std::string::npos);
    }
    state s = make_state(20);
    s.params["align_indicator.weight"] = tensor<float>::from({1.f, 2.f, INFINITY, 4.f}, {4});
    train::checkpoint_writer w(out, 20);
    w.add_tensors("diagnostics.safetensors", s.params, {.allow_nonfinite = true});
    w.commit();
    auto ck = train::find_resumable(out);
    REQUIRE(ck);
    CHECK(ck->tensors("diagnostics.safetensors").read_as<float>("align_indicator.weight")[2] == INFINITY);
}

TEST_CASE("checkpoint: writer misuse is refused naming the file; an abandoned writer leaves nothing") {
    const std::string out = fresh_dir("misuse");
    for (const std::string& bad :
         std::vector<std::string>{"", ".", "..", "a/b", "manifest.json", "x.tmp", std::string("a\0b", 3)}) {
        train::checkpoint_writer w(out, 1);
        CHECK(error_of([&] { w.add_bytes(bad, "x"); }).find("invalid checkpoint file name") != std::string::npos);
    }
    {
        train::checkpoint_writer w(out, 1);
        w.add_bytes("a.bin", "x");
        CHECK(error_of([&] { w.add_bytes("a.bin", "y"); }).find("\"a.bin\" added twice") != std::string::npos);
    }
    {
        train::checkpoint_writer w(out, 1);
        CHECK(error_of([&] { w.commit(); }).find("needs at least one file") != std::string::npos);
    }
    {
        train::checkpoint_writer w(out, 1);
        std::vector<std::pair<std::string, tensor<float>>> twice = {{"w", tensor<float>({2})}, {"w", tensor<float>({2})}};
        CHECK(error_of([&] { w.add_tensors("m.safetensors", twice); }).find("tensor \"w\" given twice") != std::string::npos);
    }
    {
        train::checkpoint_writer w(out, 1);
        w.add_bytes("a.bin", "x");  // never committed
    }
    CHECK(names_in(out).empty());
    CHECK(error_of([&] { train::checkpoint_writer w(out, -1); }).find("step -1 is negative") != std::string::npos);
}

TEST_CASE("checkpoint: F9 refuse_mismatch lists every differing field, saved vs now, one test per kind") {
    const nlohmann::json saved = {{"stage", "finetune"},
                                  {"model", {{"hidden_size", 4096}, {"rms_norm_eps", 1e-5}, {"tie", false}}},
                                  {"data", {{"path_sha256", std::string(64, 'a')}}},
                                  {"tokenizer_sha256", std::string(64, 'b')}};
    const std::string where = "/out/checkpoint-20/trainer_state.json";
    const std::vector<std::string> fields = {"stage",
                                             "model.hidden_size",
                                             "model.rms_norm_eps",
                                             "model.tie",
                                             "data.path_sha256",
                                             "tokenizer_sha256",
                                             "model.absent_on_both"};
    CHECK(error_of([&] { train::refuse_mismatch(saved, saved, fields, where); }).empty());
    const auto diff = [&](const std::string& path, const nlohmann::json& value) {
        nlohmann::json now = saved;
        std::string pointer = "/" + path;
        std::replace(pointer.begin(), pointer.end(), '.', '/');
        if (value.is_null())
            now.erase(path);  // top-level fields only
        else
            now[nlohmann::json::json_pointer(pointer)] = value;
        return error_of([&] { train::refuse_mismatch(saved, now, fields, where); });
    };
    CHECK(diff("stage", "pretrain").find(where + ": refusing to resume: 1 field of the saved configuration differ") !=
          std::string::npos);
    CHECK(diff("stage", "pretrain").find("stage: saved \"finetune\", now \"pretrain\"") != std::string::npos);
    CHECK(diff("model.hidden_size", 5120).find("model.hidden_size: saved 4096, now 5120") != std::string::npos);
    CHECK(diff("model.rms_norm_eps", 1e-6).find("model.rms_norm_eps: saved 1e-05, now 1e-06") != std::string::npos);
    CHECK(diff("model.tie", true).find("model.tie: saved false, now true") != std::string::npos);
    CHECK(diff("data.path_sha256", std::string(64, 'c')).find("data.path_sha256: saved \"aaaa") != std::string::npos);
    CHECK(diff("tokenizer_sha256", nullptr).find("tokenizer_sha256: saved \"bbbb") != std::string::npos);
    CHECK(diff("tokenizer_sha256", nullptr).find(", now (missing)") != std::string::npos);
    CHECK(diff("model.hidden_size", "4096").find("saved 4096, now \"4096\"") != std::string::npos);  // types differ
    // Several at once: all listed in one error.
    nlohmann::json now = saved;
    now["stage"] = "pretrain";
    now["model"]["hidden_size"] = 1;
    now["data"] = 3;  // not an object: its field is missing
    const std::string all = error_of([&] { train::refuse_mismatch(saved, now, fields, where); });
    CHECK(all.find("3 fields") != std::string::npos);
    CHECK(all.find("data.path_sha256: saved \"aaaa") != std::string::npos);
}

// The save that the strace test below watches, in a process of its own (skipped unless asked for
// with --no-skip, so the suite never runs it alone).
TEST_CASE("checkpoint: strace helper, run by the strace test" * doctest::skip()) {
    const char* out = std::getenv("ALIGNGPT_CKPT_STRACE_OUT");
    REQUIRE(out);
    save(out, 7);
}

TEST_CASE("checkpoint: F4 under strace, the system calls themselves: fsync(file) before rename, fsync(dir) after [slow]") {
    if (::access("/usr/bin/strace", X_OK) != 0 || std::system("/usr/bin/strace -qq -o /dev/null true >/dev/null 2>&1") != 0) {
        MESSAGE("strace missing or not permitted here: nothing checked (the hook-based F4 test still runs)");
        return;
    }
    const std::string out = fresh_dir("strace");
    const std::string log = support::scratch_dir() + "/train_checkpoint/strace.log";
    char self[4096] = {};
    REQUIRE(::readlink("/proc/self/exe", self, sizeof self - 1) > 0);
    // LeakSanitizer cannot run under ptrace: an ASan build's child would fail at exit.
    const std::string cmd = "ASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\" ALIGNGPT_CKPT_STRACE_OUT='" + out +
                            "' /usr/bin/strace -f -qq -y -o '" + log + "' -e trace=fsync,fdatasync,rename,renameat,renameat2 '" +
                            self + "' --no-skip '--test-case=checkpoint: strace helper*' >/dev/null 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
    // Lines: `PID fsync(3</path>) = 0`, `PID rename("/from", "/to") = 0` (or renameat*).
    std::vector<std::pair<std::string, std::string>> calls;  // {"fsync", path} or {"rename", from + " -> " + to}
    std::ifstream in(log);
    for (std::string line; std::getline(in, line);) {
        if (line.find(") = 0") == std::string::npos) continue;
        if (const auto f = line.find("fsync("); f != std::string::npos) {
            const auto a = line.find('<', f), b = line.find(">)", f);
            if (a != std::string::npos && b != std::string::npos) calls.emplace_back("fsync", line.substr(a + 1, b - a - 1));
        } else if (line.find("rename") != std::string::npos) {
            std::vector<std::string> quoted;
            for (auto q = line.find('"'); q != std::string::npos; q = line.find('"', line.find('"', q + 1) + 1))
                quoted.push_back(line.substr(q + 1, line.find('"', q + 1) - q - 1));
            if (quoted.size() == 2) calls.emplace_back("rename", quoted[0] + " -> " + quoted[1]);
        }
    }
    const auto at = [&](const std::string& kind, const std::string& needle) {
        for (std::size_t i = 0; i < calls.size(); i++)
            if (calls[i].first == kind && calls[i].second.find(needle) != std::string::npos) return i;
        return std::size_t(-1);
    };
    INFO(read_all(log));
    const std::size_t manifest = at("rename", "/manifest.json.tmp -> ");
    REQUIRE(manifest != std::size_t(-1));
    for (const std::string f :
         {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "stage1.bin", "manifest.json"}) {
        CAPTURE(f);
        const std::size_t sync = at("fsync", "/" + f + ".tmp"), ren = at("rename", "/" + f + ".tmp -> ");
        REQUIRE(sync != std::size_t(-1));
        CHECK(sync < ren);
        CHECK(ren <= manifest);
    }
    const std::size_t publish = at("rename", " -> " + out + "/checkpoint-7");
    REQUIRE(publish != std::size_t(-1));
    REQUIRE(publish >= 1);
    CHECK(calls[publish - 1].first == "fsync");  // the staging dir, right before it is renamed
    CHECK(calls[publish - 1].second.find("/tmp-checkpoint-7-") != std::string::npos);
    CHECK(manifest < publish - 1);
    REQUIRE(publish + 1 < calls.size());
    CHECK(calls[publish + 1] == std::make_pair(std::string("fsync"), out));  // OUT, after
    check_content(*train::find_resumable(out), 7);
}

}  // namespace test_train_checkpoint
