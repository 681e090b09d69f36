"""Writes verl_sample.parquet: three prompts in verl's DAPO-Math-17k layout (snappy, as pandas/pyarrow write
it), read by tests/rl_data.rs. Regenerate with `python3 tests/data/make_verl_parquet.py` (needs pyarrow)."""
import pathlib
import pyarrow as pa
import pyarrow.parquet as pq

rows = [
    ("math_dapo", "What is 2 + 3? Answer: $Answer", "5"),
    ("aime2024", "Find the remainder when 7^4 is divided by 10.", "1"),
    ("math_dapo", "Compute 12 * 12.", "144"),
]
table = pa.table({
    "data_source": [r[0] for r in rows],
    "prompt": [[{"content": r[1], "role": "user"}] for r in rows],
    "ability": ["MATH"] * len(rows),
    "reward_model": [{"ground_truth": r[2], "style": "rule-lighteval/MATH_v2"} for r in rows],
    "extra_info": [{"index": str(i)} for i in range(len(rows))],
})
pq.write_table(table, pathlib.Path(__file__).with_name("verl_sample.parquet"), compression="snappy")
