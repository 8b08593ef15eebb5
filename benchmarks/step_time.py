"""Benchmark: one training step of reasonlab's GPT vs Hugging Face GPT-2 of the same shape.

python benchmarks/step_time.py        (same as: reasonlab bench step)
"""

import json

from reasonlab.bench.step import step_time

if __name__ == "__main__":
    print(json.dumps(step_time(), indent=2))
