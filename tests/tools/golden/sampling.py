"""Logits processors of transformers 4.31's generate(do_sample=True) on fixed logits, for
include/aligngpt/generate/sampling.h (tests/test_sampling.cpp).

The real classes, applied in the order generate() applies them: the processors
(RepetitionPenaltyLogitsProcessor) and then the warpers (TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper), then softmax. Logits are hashfill'ed (no ties), so sorting is unambiguous.
Cases: each processor alone and the whole chain, for a few settings; min_tokens_to_keep = 1
(num_beams = 1).
"""
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
    TopPLogitsWarper)

from .common import hashfill, save

V = 97
# Context ids for the repetition penalty: repeated ids and ids of both signs of logit.
CONTEXT = [3, 17, 17, 42, 0, 96, 5, 42]
SETTINGS = [  # (repetition_penalty, temperature, top_k, top_p)
    (1.0, 1.0, 0, 1.0),
    (1.3, 1.0, 0, 1.0),
    (0.8, 1.0, 0, 1.0),
    (1.0, 0.7, 0, 1.0),
    (1.0, 1.7, 0, 1.0),
    (1.0, 1.0, 10, 1.0),
    (1.0, 1.0, 1, 1.0),
    (1.0, 1.0, 0, 0.8),
    (1.0, 1.0, 0, 0.05),
    (1.2, 0.2, 50, 0.7),
    (1.1, 0.9, 20, 0.95),
]


def golden_generate_sampling():
    logits = hashfill("sampling.logits", [1, V], 6.0)
    ids = torch.tensor([CONTEXT], dtype=torch.long)
    out = {"logits": logits[0], "context": ids[0].to(torch.float32),
           "settings": torch.tensor(SETTINGS, dtype=torch.float64)}
    for i, (rp, t, k, p) in enumerate(SETTINGS):
        procs = LogitsProcessorList()
        if rp != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(penalty=float(rp)))
        if t != 1.0:
            procs.append(TemperatureLogitsWarper(float(t)))
        if k != 0:
            procs.append(TopKLogitsWarper(top_k=int(k), min_tokens_to_keep=1))
        if p < 1.0:
            procs.append(TopPLogitsWarper(top_p=float(p), min_tokens_to_keep=1))
        scores = procs(ids, logits.clone())
        out[f"case{i}.scores"] = scores[0]
        out[f"case{i}.probs"] = torch.softmax(scores, dim=-1)[0]
    return save("generate_sampling", out)
