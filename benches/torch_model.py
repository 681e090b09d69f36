"""Torch side of `entrl bench train-step` and `entrl bench generate`: HF transformers' Qwen3 with the
qwen3-8b shape and random bf16 weights, SDPA, in the same device call (the code of
shared/anchors/torch_baselines.py): forward+backward of one 8192-token sequence with gradient
checkpointing (tokens/s, peak GiB), and HF generate at batch 16, 256 prompt + 128 new tokens.
"""
import json
import time

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM


def main() -> None:
    dev = "cuda"
    cfg = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope_theta=1e6,
                      rms_norm_eps=1e-6, max_position_embeddings=40960, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        m = Qwen3ForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    gpu = torch.cuda.get_device_name()
    m.gradient_checkpointing_enable()
    m.config.use_cache = False
    S = 8192
    ids = torch.randint(0, 151936, (1, S), device=dev)

    def step():
        m(input_ids=ids, labels=ids).loss.backward()
        m.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(3):
        t0 = time.time()
        step()
        torch.cuda.synchronize()
        times.append(time.time() - t0)
    s = sorted(times)[1]
    print(json.dumps({"bench": "train_step", "impl": "hf_sdpa_ckpt", "seq": S, "ms": round(s * 1e3, 1),
                      "tok_per_s": round(S / s, 1), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      "gpu": gpu, "torch": torch.__version__}), flush=True)
    with torch.no_grad():
        m.config.use_cache = True
        B, P0, G = 16, 256, 128
        ids = torch.randint(0, 151936, (B, P0), device=dev)
        m.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=True, top_p=1.0, temperature=1.0)
        torch.cuda.synchronize()
        t0 = time.time()
        m.generate(ids, max_new_tokens=G, min_new_tokens=G, do_sample=True, top_p=1.0, temperature=1.0)
        torch.cuda.synchronize()
        print(json.dumps({"bench": "generate", "impl": "hf_generate", "batch": B, "prompt": P0, "new": G,
                          "tok_per_s": round(B * G / (time.time() - t0), 1), "gpu": gpu}), flush=True)


if __name__ == "__main__":
    main()
