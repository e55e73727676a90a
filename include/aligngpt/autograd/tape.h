#pragma once
// Reverse-mode autograd on a tape whose order is the program's order (tinyremo's design).
//
//   tape<float> tp;
//   auto x = variable<float>::leaf(t, /*requires_grad=*/true);
//   auto y = ag::sum(&tp, ag::mul(&tp, x, x));      // each op appends one node
//   tp.backward(y);                                  // nodes run in reverse creation order
//   x.grad();                                        // 2x
//
// - A node keeps the value, the gradient (allocated on first use, never for frozen inputs), and a
//   closure that reads its own gradient and accumulates (+=) into its inputs' gradients. The
//   closure holds only what its backward reads.
// - Creation order is a topological order, so backward is one reverse loop: no DFS, no sets, and
//   gradients of a value used twice add in a fixed order (reverse creation).
// - A null tape (or a tape inside no_grad) records nothing: inference runs the same model code and
//   intermediates are freed as soon as their handles go away.
// - checkpoint() runs a block without recording and re-runs it in backward on a private tape
//   (activation checkpointing), which gives the same bits as recording it.
#include <algorithm>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "aligngpt/tensor.h"

namespace aligngpt::autograd {

template <class T, class Backend = backend::cpu>
struct node {
    tensor<T, Backend> value;
    tensor<T, Backend> grad;  // same shape as value; undefined until something flows in
    bool requires_grad = false;
    std::string op = "leaf";  // for tape::print
    std::string name;         // parameter name (HF key) for leaves, if any
    std::vector<std::shared_ptr<node>> inputs;
    std::function<void(node&)> backward;  // reads this->grad, accumulates into inputs
    index_t id = -1;                      // position on the tape (-1: not recorded)

    /// The gradient buffer, zero-filled on first use.
    tensor<T, Backend>& grad_buffer() {
        if (!grad.defined()) grad = tensor<T, Backend>(value.shape(), value.backend());
        return grad;
    }
};

/// A handle to a node: cheap to copy; the node lives while a handle or the tape refers to it.
template <class T, class Backend = backend::cpu>
class variable {
public:
    using node_type = node<T, Backend>;
    variable() = default;
    explicit variable(std::shared_ptr<node_type> n) : n_(std::move(n)) {}

    /// A leaf (input or parameter). requires_grad=false means frozen: no gradient buffer, ever.
    static variable leaf(tensor<T, Backend> value, bool requires_grad = false, std::string name = {}) {
        auto n = std::make_shared<node_type>();
        ALIGNGPT_CHECK(value.defined(), "variable::leaf: undefined tensor for '", name, "'");
        n->value = value.contiguous();
        n->requires_grad = requires_grad;
        n->name = std::move(name);
        return variable(std::move(n));
    }

    bool defined() const { return n_ != nullptr; }
    const tensor<T, Backend>& value() const { return n_->value; }
    tensor<T, Backend>& value() { return n_->value; }
    const shape_t& shape() const { return n_->value.shape(); }
    index_t size(int d) const { return n_->value.size(d); }
    bool requires_grad() const { return n_ && n_->requires_grad; }
    void set_requires_grad(bool r) { n_->requires_grad = r; }
    /// The accumulated gradient (undefined tensor if none flowed in).
    const tensor<T, Backend>& grad() const { return n_->grad; }
    tensor<T, Backend>& grad() { return n_->grad; }
    void zero_grad() { n_->grad = tensor<T, Backend>(); }
    const std::string& name() const { return n_->name; }
    /// The backend holding the value: ops run there.
    const Backend& backend() const { return n_->value.backend(); }
    node_type* get() const { return n_.get(); }
    const std::shared_ptr<node_type>& ptr() const { return n_; }

private:
    std::shared_ptr<node_type> n_;
};

template <class T, class Backend = backend::cpu>
class tape {
public:
    using var = variable<T, Backend>;
    using node_type = node<T, Backend>;

    bool recording() const { return recording_; }
    void set_recording(bool r) { recording_ = r; }
    index_t size() const { return index_t(nodes_.size()); }
    void clear() { nodes_.clear(); }

    /// Whether record() keeps an op on these inputs (recording, and some input needs a gradient):
    /// what only the op's backward reads need not be computed when it does not.
    static bool will_record(const tape* tp, const std::vector<var>& inputs) {
        if (!tp || !tp->recording_) return false;
        return std::any_of(inputs.begin(), inputs.end(), [](const var& in) { return in.requires_grad(); });
    }

    /// Appends the result of an op. The backward closure is kept only if recording and some input
    /// needs a gradient; otherwise the result is a constant and nothing is stored.
    static var record(tape* tp, std::string op, tensor<T, Backend> value, std::vector<var> inputs,
                      std::function<void(node_type&)> backward) {
        auto out = std::make_shared<node_type>();
        out->value = std::move(value);
        out->op = std::move(op);
        if (will_record(tp, inputs)) {
            out->requires_grad = true;
            for (const var& in : inputs) out->inputs.push_back(in.ptr());
            out->backward = std::move(backward);
            out->id = index_t(tp->nodes_.size());
            tp->nodes_.push_back(out);
        }
        return var(std::move(out));
    }

    /// Seeds d(loss)/d(loss) = 1 (loss must have one element) and runs the tape backwards.
    void backward(const var& loss) {
        ALIGNGPT_CHECK(loss.value().numel() == 1, "tape::backward: loss must have one element, got shape ",
                       detail::shape_str(loss.shape()));
        tensor<T, Backend> seed(loss.shape(), loss.backend());
        seed.fill(T(1));
        backward(loss, seed);
    }

    /// Runs the tape backwards with an explicit upstream gradient for `out`.
    void backward(const var& out, const tensor<T, Backend>& seed) {
        ALIGNGPT_CHECK(seed.shape() == out.shape(), "tape::backward: seed shape ", detail::shape_str(seed.shape()),
                       " != output shape ", detail::shape_str(out.shape()));
        if (!out.requires_grad()) return;
        tensor<T, Backend>& g = out.get()->grad_buffer();
        const tensor<T, Backend> s = seed.contiguous();
        g.backend().accumulate(g.data(), s.data(), g.numel());
        for (index_t i = index_t(nodes_.size()); i-- > 0;) {
            node_type& n = *nodes_[size_t(i)];
            if (n.backward && n.grad.defined()) n.backward(n);
        }
    }

    /// One line per node: "#12 linear(#11, llm.layers.0.mlp.up_proj.weight) [8,64]".
    void print(std::ostream& os) const {
        for (const auto& n : nodes_) {
            os << "#" << n->id << " " << n->op << "(";
            for (size_t k = 0; k < n->inputs.size(); k++) {
                const auto& in = n->inputs[k];
                os << (k ? ", " : "");
                if (in->id >= 0)
                    os << "#" << in->id;
                else
                    os << (in->name.empty() ? "leaf" : in->name);
            }
            os << ") " << detail::shape_str(n->value.shape()) << "\n";
        }
    }

private:
    std::vector<std::shared_ptr<node_type>> nodes_;
    bool recording_ = true;
};

/// While alive, the tape records nothing (inference, frozen blocks, evaluation).
template <class T, class Backend>
class no_grad {
public:
    explicit no_grad(tape<T, Backend>* tp) : tp_(tp), prev_(tp && tp->recording()) {
        if (tp_) tp_->set_recording(false);
    }
    ~no_grad() {
        if (tp_) tp_->set_recording(prev_);
    }
    no_grad(const no_grad&) = delete;
    no_grad& operator=(const no_grad&) = delete;

private:
    tape<T, Backend>* tp_;
    bool prev_;
};

/// Activation checkpointing for a block y = fn(tape*, x): the forward runs without recording
/// (its intermediates are freed); backward re-runs fn on a private tape and back-propagates
/// through it. Parameters captured by fn receive their gradients directly. Same bits as
/// recording the block, because the recomputation is the same code on the same values.
template <class T, class Backend, class F>
variable<T, Backend> checkpoint(tape<T, Backend>* tp, F fn, const variable<T, Backend>& x) {
    using var = variable<T, Backend>;
    var y;
    {
        no_grad<T, Backend> guard(tp);
        y = fn(static_cast<tape<T, Backend>*>(nullptr), x);
    }
    // The block may depend on parameters even if x is constant, so the node always records
    // when the tape records.
    const Backend& be = y.backend();
    auto x_in = x.defined() ? x : var::leaf(tensor<T, Backend>({1}, be));
    auto anchor = var::leaf(tensor<T, Backend>({1}, be), true);  // keeps the node on the tape
    return tape<T, Backend>::record(tp, "checkpoint", y.value(), {x_in, anchor}, [fn, x_in](node<T, Backend>& out) {
        tape<T, Backend> local;
        var x2 = var::leaf(x_in.value(), x_in.requires_grad());
        var y2 = fn(&local, x2);
        local.backward(y2, out.grad);
        if (x_in.requires_grad() && x2.grad().defined()) {
            auto& g = x_in.get()->grad_buffer();
            g.backend().accumulate(g.data(), x2.grad().data(), g.numel());
        }
    });
}

}  // namespace aligngpt::autograd
