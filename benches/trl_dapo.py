"""(Copy of ../shared/anchors/trl_dapo.py with the tokenizer read from .device-fixtures/tokenizer-qwen3.)
End-to-end anchor: what a user would pick instead of entrl on one GPU — TRL's GRPOTrainer with
loss_type='dapo' (HF generate rollouts, no vLLM), Qwen3-0.6B shape, random bf16 weights.
Reports seconds per RL step and generated tokens/s. Writes $OUT/trl.json."""
import os, json, time, dataclasses, random
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, PreTrainedTokenizerFast, TrainerCallback
import trl
from trl import GRPOConfig, GRPOTrainer
from datasets import Dataset

OUT = os.environ.get("OUT", "/tmp")
R = {"trl": trl.__version__}
tok = PreTrainedTokenizerFast(tokenizer_file=".device-fixtures/tokenizer-qwen3/tokenizer.json",
                              eos_token="<|im_end|>", pad_token="<|endoftext|>")
tok.chat_template = json.load(open(".device-fixtures/tokenizer-qwen3/tokenizer_config.json"))["chat_template"]
cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                  rope_theta=1e6, max_position_embeddings=40960, rms_norm_eps=1e-6)
torch.manual_seed(0)
model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
random.seed(0)
rows = []
for _ in range(256):
    a, b = random.randint(10, 99), random.randint(10, 99)
    rows.append({"prompt": [{"role": "user", "content": f"What is {a}+{b}? Put the final answer in \\boxed{{}}."}],
                 "answer": str(a + b)})
ds = Dataset.from_list(rows)
def reward(completions, answer, **kw):
    out = []
    for c, a in zip(completions, answer):
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(1.0 if f"\\boxed{{{a}}}" in text else -1.0)
    return out
want = dict(output_dir="/tmp/trl_out", loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0,
            num_generations=16, per_device_train_batch_size=64, gradient_accumulation_steps=1,
            max_completion_length=512, max_prompt_length=128, learning_rate=1e-6, bf16=True, max_steps=4,
            logging_steps=1, report_to=[], temperature=1.0, top_p=1.0, gradient_checkpointing=True,
            use_vllm=False, save_strategy="no", seed=0)
fields = {f.name for f in dataclasses.fields(GRPOConfig)}
dropped = [k for k in want if k not in fields]
R["dropped_args"] = dropped
args = GRPOConfig(**{k: v for k, v in want.items() if k in fields})
times = []
class T(TrainerCallback):
    def on_step_begin(self, a, s, c, **kw): self.t = time.time()
    def on_step_end(self, a, s, c, **kw): torch.cuda.synchronize(); times.append(time.time() - self.t)
tr = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok, callbacks=[T()])
t0 = time.time(); tr.train(); R["train_wall_s"] = round(time.time() - t0, 1)
R["step_s"] = [round(t, 2) for t in times]
logs = [l for l in tr.state.log_history if "loss" in l or "completions/mean_length" in l]
R["last_log"] = {k: v for k, v in (logs[-1] if logs else {}).items() if isinstance(v, (int, float))}
ml = R["last_log"].get("completions/mean_length", 512)
steady = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
R["steady_step_s"] = round(steady, 2)
R["completions_per_step"] = 64
R["gen_tokens_per_s_equiv"] = round(64 * ml / steady)
R["peak_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
json.dump(R, open(os.path.join(OUT, "trl.json"), "w"), indent=1)
for k, v in R.items(): print(f"{k:28s} {v}")
