#pragma once
// Rotary position embedding (Su et al. 2021, RoFormer eq. 34) in the Hugging Face "rotate_half"
// convention: within each head, dimension i pairs with i + HS/2 (not adjacent pairs).
//
//   inv_freq_j = 1 / theta^(2j/HS)                         j = 0 .. HS/2-1, float32 as transformers 4.31
//   a_j(p)     = float(p) * inv_freq_j                      float32 product (4.31's einsum outer product)
//   y_i        = x_i cos a_i + rotate_half(x)_i sin a_i,    a_{i+HS/2} = a_i
//   rotate_half(x) = concat(-x[HS/2:], x[:HS/2])
// i.e. for i < HS/2:  y_i = x_i c - x_{i+h} s,   y_{i+h} = x_{i+h} c + x_i s   (each product rounded,
// then the sum: the same operations as apply_rotary_pos_emb in float32).
//
// Backward: the rotation is orthogonal, dx = dy cos + rotate_half^T(dy sin) with
//   rotate_half^T(u) = concat(u[HS/2:], -u[:HS/2]):   dx_i += dy_i c + dy_{i+h} s,  dx_{i+h} += dy_{i+h} c - dy_i s
//
// Scaling (config "rope_scaling"):
//   none
//   linear  (4.31 LlamaLinearScalingRotaryEmbedding): positions divided by factor, t = float(p) / factor
//   llama3  (newer transformers _compute_llama3_parameters): inv_freq rescaled by wavelength band,
//           with every step in float32 as PyTorch evaluates it (scalar / tensor = reciprocal * scalar)
//
// Bits vs PyTorch: inv_freq equals torch's for HS <= 128 and theta 1e4 or 5e5 (checked in
// tests/test_attention.cpp). cos and sin are cos(double(a)) rounded to float (the correctly rounded
// value in practice); torch's vectorised float cos differs by 1 ulp in ~5% of entries.
//
// Shapes: x, y, dx, dy (N, NH*HS) with N = B*T rows   positions (N) int64
// Threads split rows; each element is written by one thread.
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "aligngpt/autograd/tape.h"
#include "aligngpt/backend/cpu.h"

namespace aligngpt::ops {

struct rope_scaling {
    enum class kind { none, linear, llama3 };
    kind type = kind::none;
    double factor = 1;                                ///< linear and llama3
    double low_freq_factor = 1;                       ///< llama3
    double high_freq_factor = 4;                      ///< llama3
    index_t original_max_position_embeddings = 8192;  ///< llama3

    /// From the config's rope_scaling "type" / "rope_type" string ("" or "default" means none).
    static rope_scaling from_name(const std::string& name, double factor = 1, double low = 1, double high = 4,
                                  index_t original_max = 8192) {
        rope_scaling s{kind::none, factor, low, high, original_max};
        if (name == "linear")
            s.type = kind::linear;
        else if (name == "llama3")
            s.type = kind::llama3;
        else
            ALIGNGPT_CHECK(name.empty() || name == "default", "rope: unsupported rope_scaling type '", name,
                           "' (supported: none, linear, llama3)");
        ALIGNGPT_CHECK(s.type == kind::none || factor > 0, "rope: rope_scaling factor ", factor, " must be > 0");
        ALIGNGPT_CHECK(s.type != kind::llama3 || (high > low && original_max > 0), "rope: llama3 scaling needs ",
                       "high_freq_factor > low_freq_factor and original_max_position_embeddings > 0, got ", high, ", ", low, ", ",
                       original_max);
        return s;
    }
};

/// inv_freq for one head size, theta and scaling; shared by every layer.
struct rope_table {
    int head_size = 0;
    double theta = 10000;
    rope_scaling scaling;
    std::vector<float> inv_freq;  ///< (HS/2), float32 as transformers computes it

    rope_table() = default;
    rope_table(int HS, double theta_ = 10000, rope_scaling s = {}) : head_size(HS), theta(theta_), scaling(s) {
        ALIGNGPT_CHECK(HS > 0 && HS % 2 == 0, "rope: head size ", HS, " must be positive and even");
        const float base = float(theta);
        inv_freq.resize(size_t(HS / 2));
        for (int j = 0; j < HS / 2; j++) {
            const float e = float(2 * j) / float(HS);                  // arange(0, HS, 2).float() / HS
            const float p = float(std::pow(double(base), double(e)));  // base ** e
            inv_freq[size_t(j)] = 1.0f / p;                            // 1.0 / (...)
        }
        if (scaling.type == rope_scaling::kind::llama3) apply_llama3();
    }

    /// float32 angle for position pos and frequency j (linear scaling divides the position).
    float angle(std::int64_t pos, int j) const {
        float t = float(pos);
        if (scaling.type == rope_scaling::kind::linear) t = t / float(scaling.factor);
        return t * inv_freq[size_t(j)];
    }

private:
    void apply_llama3() {
        const float factor = float(scaling.factor), low = float(scaling.low_freq_factor);
        const float old_len = float(scaling.original_max_position_embeddings);
        const double low_wavelen = double(scaling.original_max_position_embeddings) / scaling.low_freq_factor;
        const double high_wavelen = double(scaling.original_max_position_embeddings) / scaling.high_freq_factor;
        const float two_pi = float(2 * std::numbers::pi), band = float(scaling.high_freq_factor - scaling.low_freq_factor);
        for (float& f : inv_freq) {
            const float wavelen = (1.0f / f) * two_pi;  // 2*pi / inv_freq
            const float scaled = wavelen > float(low_wavelen) ? f / factor : f;
            const float smooth = ((1.0f / wavelen) * old_len - low) / band;
            const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
            const bool medium = !(wavelen < float(high_wavelen)) && !(wavelen > float(low_wavelen));
            f = medium ? smoothed : scaled;
        }
    }
};

/// cos and sin of the HS/2 angles at position pos, rounded to T.
template <class T>
void rope_cos_sin(const rope_table& tab, std::int64_t pos, T* c, T* s) {
    for (int j = 0; j < tab.head_size / 2; j++) {
        const double a = double(tab.angle(pos, j));
        c[j] = T(std::cos(a));
        s[j] = T(std::sin(a));
    }
}

/// y = rope(x); y may equal x (in place).
template <class T>
void rope_forward(const backend::cpu&, T* y, const T* x, const std::int64_t* pos, index_t N, int NH, const rope_table& tab) {
    const index_t HS = tab.head_size, h = HS / 2, C = NH * HS;
    ALIGNGPT_OMP_FOR  // each thread owns rows n
        for (index_t n = 0; n < N; n++) {
        std::vector<T> c(static_cast<std::size_t>(h)), s(static_cast<std::size_t>(h));
        rope_cos_sin(tab, pos[n], c.data(), s.data());
        for (index_t hd = 0; hd < NH; hd++)
            for (index_t i = 0; i < h; i++) {
                const index_t a = n * C + hd * HS + i, b = a + h;
                const T xa = x[a], xb = x[b];  // read both before writing (in place)
                const T ya = xa * c[size_t(i)] + (-xb) * s[size_t(i)];
                const T yb = xb * c[size_t(i)] + xa * s[size_t(i)];
                y[a] = ya;
                y[b] = yb;
            }
    }
}

/// dx += rope^T(dy); dx must not alias dy.
template <class T>
void rope_backward(const backend::cpu&, T* dx, const T* dy, const std::int64_t* pos, index_t N, int NH, const rope_table& tab) {
    const index_t HS = tab.head_size, h = HS / 2, C = NH * HS;
    ALIGNGPT_OMP_FOR  // each thread owns rows n
        for (index_t n = 0; n < N; n++) {
        std::vector<T> c(static_cast<std::size_t>(h)), s(static_cast<std::size_t>(h));
        rope_cos_sin(tab, pos[n], c.data(), s.data());
        for (index_t hd = 0; hd < NH; hd++)
            for (index_t i = 0; i < h; i++) {
                const index_t a = n * C + hd * HS + i, b = a + h;
                dx[a] += dy[a] * c[size_t(i)] + dy[b] * s[size_t(i)];
                dx[b] += dy[b] * c[size_t(i)] - dy[a] * s[size_t(i)];
            }
    }
}

}  // namespace aligngpt::ops

namespace aligngpt::ag {

using ops::rope_scaling;
using ops::rope_table;

/// Rotates every head of x [..., NH*HS] (rows in order B*T) by its row's position.
template <class T, class Backend>
autograd::variable<T, Backend> rope(autograd::tape<T, Backend>* tp, const autograd::variable<T, Backend>& x,
                                    const std::vector<std::int64_t>& positions, const rope_table& tab) {
    const Backend& be = x.backend();
    const index_t HS = tab.head_size, C = x.value().dim() ? x.shape().back() : 0;
    ALIGNGPT_CHECK(HS > 0 && x.value().dim() >= 2 && C % HS == 0, "rope: x ", detail::shape_str(x.shape()),
                   " last dim is not a multiple of head size ", HS);
    const index_t N = x.value().numel() / C;
    ALIGNGPT_CHECK(index_t(positions.size()) == N, "rope: x ", detail::shape_str(x.shape()), " has ", N,
                   " rows but positions has shape [", positions.size(), "]");
    const int NH = int(C / HS);
    tensor<T, Backend> y(x.shape(), be);
    rope_forward(be, y.data(), x.value().data(), positions.data(), N, NH, tab);
    return autograd::tape<T, Backend>::record(tp, "rope", y, {x}, [x, positions, tab, N, NH](autograd::node<T, Backend>& n) {
        const Backend& bk = n.value.backend();
        rope_backward(bk, x.get()->grad_buffer().data(), n.grad.data(), positions.data(), N, NH, tab);
    });
}

}  // namespace aligngpt::ag
