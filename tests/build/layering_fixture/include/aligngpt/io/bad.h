#pragma once
// Fixture for build.io_below_models_detects: an io/ header that includes a model.
#include "aligngpt/models/llama.h"
