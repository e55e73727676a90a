// Fuzz target: the restricted pickle machine alone, on the bytes of a data.pkl (in memory).
#include "aligngpt/io/pickle.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace aligngpt;
    fuzz::expect_ok_or_refused("fuzz/data.pkl", [&] {
        io::pickle::machine vm(fuzz::as_text(data, size), "fuzz/data.pkl");
        (void)vm.state_dict();
    });
    return 0;
}
