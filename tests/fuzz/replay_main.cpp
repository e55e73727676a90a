// Replays files through a fuzz target without libFuzzer's engine: the CTest form of a target
// (fuzz.replay.<target>), built under ASan+UBSan. Arguments are files or directories (every
// regular file under them, in name order). A missing directory is skipped, since a target may have
// no regression files yet, but a run that replays nothing fails: a wrong corpus path must not pass.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    for (int i = 1; i < argc; i++) {
        const fs::path p = argv[i];
        if (fs::is_regular_file(p)) {
            files.push_back(p);
        } else if (fs::is_directory(p)) {
            for (const auto& e : fs::recursive_directory_iterator(p))
                if (e.is_regular_file()) files.push_back(e.path());
        } else {
            std::printf("replay: %s does not exist, skipped\n", p.c_str());
        }
    }
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
        std::printf("replay: %s\n", f.c_str());
        std::fflush(stdout);  // a crash below is then attributed to this file
        std::ifstream in(f, std::ios::binary);
        const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        static const std::uint8_t none = 0;  // libFuzzer never passes a null pointer, even for 0 bytes
        LLVMFuzzerTestOneInput(bytes.empty() ? &none : reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    }
    std::printf("replay: %zu files, no finding\n", files.size());
    return files.empty() ? 1 : 0;
}
