// The backend policy, proved without a GPU: the tiny CLIP, LLaMA and AlignGPT run forward and
// backward on test::opaque (tests/support/opaque_backend.h), whose memory the host cannot read,
// and give the same bits as backend::cpu. Host transfers per forward are counted and bounded:
// model code that touched tensor memory directly would crash here, and one that copied to the host
// behind the backend's back would show in the counts. ctest label: backend.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip.h"
#include "support/model_parity.h"
#include "support/opaque_backend.h"

namespace test_backend {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

using namespace aligngpt;
using test::opaque;

namespace {

/// The opaque backend's counters, for the shared parity checks (support/model_parity.h).
struct probe {
    const opaque* dev;
    void reset() const { dev->reset_counts(); }
    test::parity::counts now() const { return {dev->to_host_calls, dev->from_host_calls, dev->launches}; }
};

using test::parity::pixel_values;

}  // namespace

TEST_SUITE("backend") {
    TEST_CASE("backend: the opaque test backend hides its memory and counts transfers") {
        opaque dev;
        auto t = tensor<float, opaque>::from({1, 2, 3, 4, 5, 6}, {2, 3}, dev);
        CHECK(dev.is_handle(t.data()));
        CHECK(dev.from_host_calls == 1);
        t.fill(2.f);
        const auto c = t.transpose(0, 1).contiguous();  // a strided copy on the device
        CHECK(c.shape() == shape_t{3, 2});
        CHECK(c.to_vector() == std::vector<float>(6, 2.f));
        CHECK(dev.to_host_calls == 1);
        CHECK_THROWS_WITH(dev.to_host(t.data(), t.data(), 1), doctest::Contains("host target"));
    }

    TEST_CASE_TEMPLATE(
        "backend: a 16-bit packed linear (forward and input gradient) gives backend::cpu's bits on the opaque "
        "backend",
        S, bf16, f16) {
        opaque dev;
        const auto c = test::parity::packed_linear<S>(dev, probe{&dev});
        CHECK(c.first.to_host == 0);  // the panels are host memory the opaque backend's kernels read
        CHECK(c.first.from_host == 0);
        CHECK(c.second.from_host == 0);
    }

    TEST_CASE("backend: tiny CLIP forward and backward give backend::cpu's bits on the opaque backend") {
        opaque dev;
        const auto c = test::parity::clip(dev, probe{&dev});
        // One transfer per forward: exp(logit_scale) is a host scalar of ag::scale.
        CHECK(c.forward.to_host == 1);
        CHECK(c.forward.from_host == 0);
        CHECK(c.backward.to_host == 1);  // backward reads nothing on the host
        CHECK(c.backward.from_host == 0);
        CHECK(c.forward.launches > 0);
    }

    TEST_CASE("backend: tiny LLaMA forward, backward and greedy decoding give backend::cpu's bits on the opaque backend") {
        opaque dev;
        const auto c = test::parity::llama(dev, probe{&dev});
        // A forward reads nothing back: ids and positions are host arguments.
        CHECK(c.forward.to_host == 0);
        CHECK(c.forward.from_host == 0);
        CHECK(c.backward.to_host == 0);
        CHECK(c.backward.from_host == 0);
        CHECK(c.generate.to_host == c.generated);  // one logits row per token, for the argmax
        CHECK(c.generate.from_host == 0);
    }

    TEST_CASE("backend: tiny AlignGPT stage 1 and stage 2 give backend::cpu's bits on the opaque backend") {
        opaque dev;
        const auto c = test::parity::aligngpt(dev, probe{&dev});
        for (int s = 0; s < 2; s++) {
            CHECK(c.forward[s].to_host == 0);
            CHECK(c.forward[s].from_host == 0);
            CHECK(c.backward[s].to_host == 0);
            CHECK(c.backward[s].from_host == 0);
        }
        CHECK(c.generate.to_host == c.generated);
    }

    TEST_CASE("backend: load_aligngpt onto the opaque backend; every traced intermediate of a prefill has the CPU's bits") {
        opaque dev;
        CHECK(test::parity::model_dir_trace(dev) >= 12);
    }

}  // TEST_SUITE("backend")

}  // namespace test_backend
