#pragma once
// Umbrella header: everything the library offers, on the CPU backend (backend/cpu.h). Another
// backend is a header of its own, included next to this one (docs/design.md "Backend policy").
#include "aligngpt/config.h"
#include "aligngpt/half.h"
#include "aligngpt/rng.h"
#include "aligngpt/tensor.h"
#include "aligngpt/tensor_adaptors.h"
#include "aligngpt/trace.h"
#include "aligngpt/backend/cpu.h"

#include "aligngpt/autograd/grad_check.h"
#include "aligngpt/autograd/tape.h"

#include "aligngpt/ops/activations.h"
#include "aligngpt/ops/attention.h"
#include "aligngpt/ops/batched_matvec.h"
#include "aligngpt/ops/cross_entropy.h"
#include "aligngpt/ops/elementwise.h"
#include "aligngpt/ops/embedding.h"
#include "aligngpt/ops/gemm.h"
#include "aligngpt/ops/l2_normalize.h"
#include "aligngpt/ops/layer_norm.h"
#include "aligngpt/ops/linear.h"
#include "aligngpt/ops/masked_mean.h"
#include "aligngpt/ops/packed.h"
#include "aligngpt/ops/patch_embed.h"
#include "aligngpt/ops/reduce.h"
#include "aligngpt/ops/rms_norm.h"
#include "aligngpt/ops/rope.h"
#include "aligngpt/ops/shape.h"
#include "aligngpt/ops/softmax.h"

#include "aligngpt/nn/module.h"

#include "aligngpt/models/align.h"
#include "aligngpt/models/aligngpt.h"
#include "aligngpt/models/clip.h"
#include "aligngpt/models/clip_vision.h"
#include "aligngpt/models/llama.h"
#include "aligngpt/models/projector.h"

#include "aligngpt/generate/greedy.h"
#include "aligngpt/conversation.h"  // tokenizer/llama.h is not here: it needs aligngpt::tokenizer

#include "aligngpt/io/checkpoint.h"
#include "aligngpt/io/image.h"
#include "aligngpt/io/json.h"
#include "aligngpt/io/safetensors.h"
#include "aligngpt/io/torch_bin.h"

#include "aligngpt/pretrained.h"
