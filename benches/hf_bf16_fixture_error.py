"""How far HF transformers' own bf16 Qwen3 lands from the float64 fixtures, next to entrl's bf16 GPU errors.

The fixtures (../shared/fixtures, README there) are float64 results over bf16 weights with sharpened
attention, so any bf16 implementation drifts from them, more with depth. This script measures that drift
for HF itself (eager attention, bf16 activations and gradients, loss math in f32 from the bf16 logits,
the model cast exactly as make_fixtures.py casts it) with the same norm-wise ‖a − b‖ / ‖b‖ that
`entrl verify-reference` prints, and puts entrl's numbers beside it.

Usage: python3 benches/hf_bf16_fixture_error.py FIXTURE_DIR ENTRL_VERIFY_TXT [...pairs]
Prints one JSON line per fixture and a table: quantity, entrl, HF bf16, entrl / HF.
"""
import json
import math
import sys

import torch
from safetensors.torch import load_file
from transformers import Qwen3ForCausalLM


def rel(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def hf_errors(d):
    try:  # transformers >= 4.56 names it dtype; older ones torch_dtype
        m = Qwen3ForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        m = Qwen3ForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager")
    m = m.to(torch.bfloat16).cuda()
    ins, ref, refg = (load_file(f"{d}/{f}.safetensors") for f in ("inputs", "reference", "reference_grads"))
    n = 0
    while f"input_ids.{n}" in ins:
        n += 1
    errs = {}
    logits, lps, ents, norms = [], [], None, None
    num, den = 0.0, 0.0
    m.zero_grad()
    for i in range(n):
        ids = ins[f"input_ids.{i}"].long().cuda()
        o = m(input_ids=ids[None], output_attentions=True, use_cache=False)
        lg = o.logits[0].float()
        logits.append(lg.detach().cpu())
        lp = torch.log_softmax(lg, -1)[:-1].gather(-1, ids[1:, None]).squeeze(-1)
        lps.append(lp.detach().cpu())
        L = ids.numel()
        h = torch.stack([-(a[0].float() * torch.log(a[0].float().clamp_min(1e-30))).sum(-1) for a in o.attentions])
        hn = h / torch.log(torch.arange(1, L + 1, device=h.device, dtype=torch.float32)).clamp_min(1e-12)
        hn[..., 0] = 0.0
        ents = [h.cpu()] if ents is None else ents + [h.cpu()]
        norms = [hn.cpu()] if norms is None else norms + [hn.cpu()]
        old, adv = ins[f"old_logprob.{i}"].cuda(), ins[f"advantage.{i}"].cuda()
        mask, w = ins[f"loss_mask.{i}"].cuda(), ins[f"token_weight.{i}"].cuda()
        r = torch.exp(lp - old)
        pg = torch.maximum(-adv * r, -adv * torch.clamp(r, 1 - 0.2, 1 + 0.28))
        num = num + (pg * w).sum()
        den = den + float(mask.sum())
    loss = num / den
    loss.backward()
    errs["logits"] = rel(torch.cat([x.flatten() for x in logits]),
                         torch.cat([ref[f"logits.{i}"].flatten() for i in range(n)]))
    errs["next-token log-probs"] = rel(torch.cat(lps), torch.cat([ref[f"next_logprob.{i}"] for i in range(n)]))
    for layer in range(m.config.num_hidden_layers):
        for label, ours, key in (("attention entropy", ents, "attn_entropy"),
                                 ("attention entropy (normalised)", norms, "attn_entropy_norm")):
            a = torch.cat([ours[i][layer].flatten() for i in range(n)])
            b = torch.cat([ref[f"{key}.{i}"][layer].flatten() for i in range(n)])
            errs[f"{label}, layer {layer}"] = rel(a, b)
    errs["dapo loss"] = rel(loss.detach().float().cpu().reshape(1), ref["dapo_loss"])
    for name, p in m.named_parameters():
        g = p.grad.float().cpu() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32).cpu()
        errs[f"grad {name}"] = rel(g, refg[f"grad.{name}"])
    return errs


def entrl_errors(path):
    """Rows of `entrl verify-reference` output: quantity, rel err[, cpu bf16], tol, ok|FAIL."""
    out, numbers = {}, 2
    for line in open(path):
        if line.startswith("quantity"):
            numbers = 3 if "cpu bf16" in line else 2
        tok = line.split()
        if len(tok) > numbers + 1 and tok[-1] in ("ok", "FAIL"):
            try:
                out[" ".join(tok[: -(numbers + 1)])] = float(tok[-(numbers + 1)])
            except ValueError:
                pass
    return out


def main():
    args = sys.argv[1:]
    for d, ours_txt in zip(args[::2], args[1::2]):
        hf = hf_errors(d)
        ours = entrl_errors(ours_txt)
        ratios = {k: ours[k] / hf[k] for k in hf if k in ours and hf[k] > 0}
        worst = max(ratios.items(), key=lambda kv: kv[1]) if ratios else ("-", math.nan)
        r = {"bench": "hf_bf16_fixture_error", "fixture": d.rstrip("/").split("/")[-1],
                          "rows": len(ratios), "worst_ratio": worst[1], "worst_row": worst[0],
                          "median_ratio": sorted(ratios.values())[len(ratios) // 2] if ratios else math.nan,
                          "hf": hf, "entrl": ours, "torch": torch.__version__}
        print(json.dumps(r), flush=True)
        print(f"{d}: entrl/HF-bf16 error ratio median {r['median_ratio']:.2f}, worst {r['worst_ratio']:.2f} "
              f"({r['worst_row']})", file=sys.stderr)
        print(f"{'quantity':<58} {'entrl':>10} {'HF bf16':>10} {'ratio':>7}", file=sys.stderr)
        for k, v in hf.items():
            o = ours.get(k, math.nan)
            print(f"{k:<58} {o:>10.3e} {v:>10.3e} {o / v if v > 0 else math.nan:>7.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
