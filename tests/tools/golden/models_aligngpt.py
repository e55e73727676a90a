"""Golden recipes for include/aligngpt/models/{align.h, aligngpt.h} (tests/test_aligngpt.cpp).

The reference forward is written here in torch after AlignGPT src/model/aligngpt.py and
multimodal_components/mm_align.py (docs/model.md §7, §5, §9.1): projector nn.Sequential(Linear, GELU, Linear),
GatedWeightLayer, AlignIndicator.lin_comb / lookup, prepare_inputs_labels_for_multimodal with right
padding, then the REAL transformers 4.31 LlamaForCausalLM on inputs_embeds (fp32, CPU).

Tiny config: LLaMA H=64, 2 layers, 4 heads, intermediate 96, vocab 64; CLIP features [576, 32]
(the gate's input width stays 576). Every weight is hashfill(<HF key>) (models_llama.fill_value for
the LLM; PyTorch's default bound 1/sqrt(in) for projector and gate; the xavier bound sqrt(6/(H+8))
for the indicators), mirrored by tests/test_aligngpt.cpp. Nothing but inputs and outputs is saved.

[B, S, *] tensors are stored at the probe positions "probe" only (text rows and every 37th row),
which keeps the fixtures small; everything else is stored whole.
"""
import torch
from torch import nn
from transformers import LlamaForCausalLM

from .common import hashfill, save
from .models_llama import fill_module, tiny_config

IGNORE, IMAGE = -100, -200
N_IMG = 576
H, DV, V = 64, 32, 64


def build():
    torch.manual_seed(0)
    llm = LlamaForCausalLM(tiny_config(vocab_size=V)).eval()
    fill_module(llm)
    proj = nn.Sequential(nn.Linear(DV, H), nn.GELU(), nn.Linear(H, H))
    gate = nn.Sequential(nn.Linear(N_IMG, 256), nn.GELU(), nn.Linear(256, 7))
    with torch.no_grad():
        for prefix, mod in (("mm_projector.", proj), ("gated_weight_layer.mlp.", gate)):
            for k, p in mod.named_parameters():
                fan_in = mod[int(k.split(".")[0])].in_features
                p.copy_(hashfill(prefix + k, tuple(p.shape), 1.0 / fan_in ** 0.5))
    ind = nn.Parameter(hashfill("align_indicators.indicator_embs", (8, H), (6.0 / (H + 8)) ** 0.5))
    return llm, proj, gate, ind


def gate_forward(gate, image_embeds, text_embeds, text_mask):
    """GatedWeightLayer.forward."""
    scale = text_mask.int().sum(-1, keepdim=True).to(text_embeds.dtype)
    avg = text_embeds.sum(1) / (scale + 1e-8)
    dots = (image_embeds * avg.unsqueeze(1)).sum(-1)
    return avg, dots, gate(dots).softmax(-1)


def reference_forward(llm, proj, gate, ind, samples, feats, stage, max_length):
    """prepare_inputs_labels_for_multimodal (right padding) + AlignGPTForCausalLM.forward."""
    emb = llm.model.embed_tokens
    image_features = proj(feats) if feats is not None else None
    new_e, new_l, text_e, image_e, pure_e, pure_l = [], [], [], [], [], []
    k = 0
    for s in samples:
        ids, lab = torch.tensor(s["ids"]), torch.tensor(s["labels"])
        if (ids == IMAGE).sum() == 0:
            pure_e.append(emb(ids)), pure_l.append(lab)
            continue
        at = int(torch.where(ids == IMAGE)[0][0])
        e0, e1 = emb(ids[:at]), emb(ids[at + 1:])
        img = image_features[k]
        k += 1
        new_e.append(torch.cat([e0, img, e1]))
        new_l.append(torch.cat([lab[:at], torch.full((N_IMG,), IGNORE), lab[at + 1:]]))
        text_e.append(torch.cat([e0, e1]))
        image_e.append(img)
    trace = {}
    Bi = len(new_e)
    if Bi:
        new_e = [x[:max_length - 1] for x in new_e]
        new_l = [x[:max_length - 1] for x in new_l]
        L = max(x.shape[0] for x in new_e)
        Lt = max(x.shape[0] for x in text_e)
        X = torch.zeros(Bi, L, H)
        T = torch.zeros(Bi, Lt, H)
        labels = torch.full((Bi, L + 1), IGNORE)
        mask = torch.zeros(Bi, L + 1, dtype=torch.bool)
        pos = torch.zeros(Bi, L + 1, dtype=torch.long)
        tmask = torch.zeros(Bi, Lt, dtype=torch.bool)
        for i in range(Bi):
            n, nt = new_e[i].shape[0], text_e[i].shape[0]
            X[i, :n] = new_e[i]
            T[i, :nt] = text_e[i]
            tmask[i, :nt] = True
            labels[i, 0] = new_l[i][0]
            labels[i, 2:n + 1] = new_l[i][1:]
            mask[i, :n + 1] = True
            pos[i, :n + 1] = torch.arange(n + 1)
        if stage == "pretrain":
            h = ind[torch.tensor([s["level"] for s in samples])]
        else:
            a, d, w = gate_forward(gate, torch.stack(image_e), T[:, 1:], tmask[:, 1:])
            trace.update({"gate.text_mean": a, "gate.dots": d, "gate.weights": w})
            h = w @ ind[:-1] + ind[-1]
        trace["align.indicator"] = h
        X = torch.cat([X[:, :1], h.unsqueeze(1), X[:, 1:]], 1)
    if pure_e:
        S = X.shape[1] if Bi else max(x.shape[0] for x in pure_e)
        P = torch.zeros(len(pure_e), S, H)
        pl = torch.full((len(pure_e), S), IGNORE)
        pm = torch.zeros(len(pure_e), S, dtype=torch.bool)
        pp = torch.zeros(len(pure_e), S, dtype=torch.long)
        for i, (e, lab) in enumerate(zip(pure_e, pure_l)):
            n = min(e.shape[0], S)
            P[i, :n], pl[i, :n], pm[i, :n], pp[i, :n] = e[:n], lab[:n], True, torch.arange(n)
        X = torch.cat([X, P]) if Bi else P
        labels = torch.cat([labels, pl]) if Bi else pl
        mask = torch.cat([mask, pm]) if Bi else pm
        pos = torch.cat([pos, pp]) if Bi else pp
    trace["inputs_embeds"] = X
    outs = {}
    hooks = [llm.model.layers[i].register_forward_hook(
        lambda m, inp, out, i=i: outs.__setitem__(i, out[0])) for i in range(len(llm.model.layers))]
    r = llm(inputs_embeds=X, attention_mask=mask.long(), position_ids=pos, labels=labels)
    for hk in hooks:
        hk.remove()
    for i in range(len(outs)):
        trace[f"llm.layers.{i}.out"] = outs[i]
    trace["logits"] = r.logits
    return trace, r.loss


def probe_rows(S):
    return sorted(set(range(16)) | set(range(max(0, S - 40), S)) | set(range(0, S, 37)))


def pack(name, samples, feats, stage, max_length, grads, extra=None):
    llm, proj, gate, ind = build()
    for p in list(llm.parameters()) + list(proj.parameters()) + list(gate.parameters()) + [ind]:
        p.requires_grad_(True)
    trace, loss = reference_forward(llm, proj, gate, ind, samples, feats, stage, max_length)
    loss.backward()
    S = trace["logits"].shape[1]
    probe = probe_rows(S)
    t = {"probe": torch.tensor(probe, dtype=torch.int64), "loss": loss.detach().reshape(1)}
    for i, s in enumerate(samples):
        t[f"ids{i}"] = torch.tensor(s["ids"], dtype=torch.int64)
        t[f"labels{i}"] = torch.tensor(s["labels"], dtype=torch.int64)
        if "level" in s:
            t[f"level{i}"] = torch.tensor([s["level"]], dtype=torch.int64)
    for k, v in trace.items():
        v = v.detach()
        t[k] = v[:, probe] if v.dim() == 3 and v.shape[1] == S else v
    named = dict(llm.named_parameters())
    named.update({"mm_projector." + k: p for k, p in proj.named_parameters()})
    named.update({"gated_weight_layer.mlp." + k: p for k, p in gate.named_parameters()})
    named["align_indicators.indicator_embs"] = ind
    for g in grads:
        t["grad." + g] = named[g].grad.detach().clone()
    t.update(extra or {})
    return save(name, t, metadata={"stage": stage, "tokenizer_model_max_length": str(max_length)})


def ids_from(tag, n):
    """n text ids in 3..V-1 (never BOS/EOS/pad)."""
    raw = hashfill(tag, (n,), 1.0)
    return (3 + ((raw + 1.0) * 0.5 * (V - 3)).floor().clamp(0, V - 4)).to(torch.int64).tolist()


def features(n):
    return hashfill("aligngpt.features", (n, N_IMG, DV), 1.0)


def golden_aligngpt_stage1():
    """Stage 1, plain template: ids [BOS, IMG, caption.., 13], labels ignore BOS and IMG; one sample
    is cut by tokenizer_model_max_length 590 (-> 589 before the indicator)."""
    samples = []
    for i, (n, level) in enumerate([(5, 3), (14, 7)]):
        cap = ids_from(f"aligngpt_stage1.caption{i}", n)
        samples.append({"ids": [1, IMAGE] + cap + [13], "labels": [IGNORE, IGNORE] + cap + [13], "level": level})
    return pack("aligngpt_stage1", samples, features(2), "pretrain", 590,
                ["align_indicators.indicator_embs", "mm_projector.2.weight", "mm_projector.0.bias"])


def v1_sample(tag, with_image, n_q, n_a):
    """vicuna_v1 shape: [BOS, system.., USER :, (▁ IMG ▁ \\n), question.., ASSISTANT :, answer.., </s>];
    targets = answer and </s> (docs/model.md §9.1)."""
    sys, user, asst = ids_from(tag + ".sys", 5), ids_from(tag + ".user", 3), ids_from(tag + ".asst", 3)
    q, a = ids_from(tag + ".q", n_q), ids_from(tag + ".a", n_a) + [2]
    img = [29 % V, IMAGE, 29 % V, 13] if with_image else []
    prompt = [1] + sys + user + img + q + asst
    return {"ids": prompt + a, "labels": [IGNORE] * len(prompt) + a}


def golden_aligngpt_stage2():
    """Stage 2 (finetune, gate mix), v1 masks: one image sample and one text-only sample (no
    indicator, padded to the image row's length). Also greedy generation (inference) of 24 tokens
    for the image prompt and for the text-only prompt, with the KV cache."""
    samples = [v1_sample("aligngpt_stage2.s0", True, 4, 5), v1_sample("aligngpt_stage2.s1", False, 6, 4)]
    feats = features(1)
    llm, proj, gate, ind = build()
    extra = {}
    with torch.no_grad():
        for i, s in enumerate(samples):
            prompt = s["ids"][:s["labels"].index(next(x for x in s["labels"] if x != IGNORE))]
            trace, _ = reference_forward(llm, proj, gate, ind, [{"ids": prompt, "labels": [IGNORE] * len(prompt)}],
                                         feats if IMAGE in prompt else None, "inference", 2048)
            X = trace["inputs_embeds"]
            out = llm(inputs_embeds=X, use_cache=True)
            gen = []
            for _ in range(24):
                nxt = int(out.logits[0, -1].argmax())
                gen.append(nxt)
                if nxt == 2:
                    break
                past = out.past_key_values[0][0].shape[2]
                out = llm(input_ids=torch.tensor([[nxt]]), past_key_values=out.past_key_values, use_cache=True,
                          attention_mask=torch.ones(1, past + 1, dtype=torch.long), position_ids=torch.tensor([[past]]))
            extra[f"prompt{i}"] = torch.tensor(prompt, dtype=torch.int64)
            extra[f"generated{i}"] = torch.tensor(gen, dtype=torch.int64)
            if i == 0:
                extra["infer.gate.weights"] = trace["gate.weights"]
    return pack("aligngpt_stage2", samples, feats, "finetune", 2048,
                ["gated_weight_layer.mlp.2.weight", "gated_weight_layer.mlp.0.bias", "mm_projector.0.weight",
                 "model.embed_tokens.weight"], extra)
