"""Benchmark: evaluation of a trained run's probes, full recomputation (the original algorithm)
vs incremental decoding, time, queries per second and whether the metrics are equal (see
src/reasonlab/bench/evaluation.py for how).

python benchmarks/eval_speed.py RUN_DIR [--repeats 3] [--step N] [--device cpu] [--threads T]

A run to time: e.g. one run of the quick CoT study,
    python -m reasonlab study cot-twohop --preset cpu --out /tmp/evalstudy
    python benchmarks/eval_speed.py /tmp/evalstudy/runs/cot-interleaved-s0
"""

import argparse
import json
import sys

from reasonlab.bench.evaluation import eval_benchmark, format_eval_table

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="+", help="trained run folder(s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: newest)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's setting")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    parser.add_argument("--json", action="store_true", help="also print the full result")
    args = parser.parse_args()
    equal = True
    for run_dir in args.run_dir:
        result = eval_benchmark(
            run_dir,
            repeats=args.repeats,
            step=args.step,
            device=args.device,
            threads=args.threads,
            batch_size=args.batch_size,
        )
        equal = equal and result["metrics_equal"]
        print(format_eval_table(result))
        if args.json:
            print(json.dumps(result, indent=2))
        print()
    sys.exit(0 if equal else 1)
