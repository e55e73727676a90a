// 02: the autograd tape on a small two-layer network, checked against finite differences.
//   build/examples/example_02_grad_check
#include <cstdio>
#include <iostream>

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/ops/linear.h"

using namespace aligngpt;
using namespace aligngpt::autograd;

int main() {
    // y = W2 (W1 x + b1), in double so central differences are accurate to ~1e-10.
    auto x = random_leaf<double>({4, 8}, 1), w1 = random_leaf<double>({16, 8}, 2), b1 = random_leaf<double>({16}, 3),
         w2 = random_leaf<double>({3, 16}, 4);
    op_under_test<double> net = [](tape<double>* tp, const std::vector<variable<double>>& v) {
        return ag::linear(tp, ag::linear(tp, v[0], v[1], v[2]), v[3]);
    };

    tape<double> tp;
    net(&tp, {x, w1, b1, w2});
    std::cout << "the tape, in creation order:\n";
    tp.print(std::cout);

    const double err = grad_check(net, {x, w1, b1, w2});
    std::printf("largest relative gradient error vs central differences: %.3g (%s)\n", err, err < 1e-8 ? "ok" : "TOO LARGE");
    return err < 1e-8 ? 0 : 1;
}
