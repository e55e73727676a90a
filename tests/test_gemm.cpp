// GEMM: the fast path equals the one-fma-chain-per-element definition bit for bit, for every
// transpose the models use, every init mode, and odd sizes that exercise the edges of blocking.
#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <vector>

#include "aligngpt/ops/gemm.h"
#include "aligngpt/rng.h"

using namespace aligngpt;

TEST_CASE("gemm equals gemm_reference bit for bit (all transposes, init modes, edge sizes)") {
    for (const auto& mnk : std::vector<std::array<index_t, 3>>{{1, 1, 1}, {1, 33, 17}, {7, 5, 3}, {13, 47, 129}, {65, 96, 300}}) {
        const index_t M = mnk[0], N = mnk[1], K = mnk[2];
        std::vector<float> A(size_t(M * K)), B(size_t(K * N)), bias(static_cast<size_t>(N));
        rng::fill_uniform(A.data(), M * K, 1, 1, 1.f);
        rng::fill_uniform(B.data(), K * N, 1, 2, 1.f);
        rng::fill_uniform(bias.data(), N, 1, 3, 1.f);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (auto init : {ops::gemm_init::zero, ops::gemm_init::bias, ops::gemm_init::accumulate}) {
                    const index_t rsa = ta ? 1 : K, csa = ta ? M : 1, rsb = tb ? 1 : N, csb = tb ? K : 1;
                    std::vector<float> c_ref(size_t(M * N)), c(size_t(M * N));
                    rng::fill_uniform(c_ref.data(), M * N, 1, 4, 1.f);
                    c = c_ref;
                    ops::gemm_reference(M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, c_ref.data(), N, init,
                                        bias.data());
                    ops::gemm(backend::cpu{}, M, N, K, A.data(), rsa, csa, B.data(), rsb, csb, c.data(), N, init,
                              bias.data());
                    CAPTURE(M); CAPTURE(N); CAPTURE(K); CAPTURE(ta); CAPTURE(tb);
                    CHECK(std::memcmp(c.data(), c_ref.data(), c.size() * sizeof(float)) == 0);
                }
    }
}
