"""Benchmark: the selective scan's forward + backward, reasonlab's scan (compiled for large CPU
inputs) and its eager chunked scan vs mambapy's parallel scan vs the sequential loop, time and
peak memory (see src/reasonlab/bench/scan.py for how).

python benchmarks/scan_speed.py                      (same as: reasonlab bench scan)
python benchmarks/scan_speed.py --copy               (the COPY-like Mamba's scan: batch 64, L 40;
                                                      same as: reasonlab bench scan --batch 64
                                                      --lengths 40)
python benchmarks/scan_speed.py --threads 1 --repeats 7
python benchmarks/scan_speed.py --chunk-sizes 4,8,16,32,64   (eager chunk length sweep)
"""

import argparse
import json

from reasonlab.bench.scan import COPY_SHAPE, chunk_size_sweep, format_scan_table, scan_benchmark


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=_ints, default=None, help="default 64,256,1024")
    parser.add_argument("--batch", type=int, default=None, help="default 16")
    parser.add_argument("--d-inner", type=int, default=256)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument(
        "--copy", action="store_true", help="the COPY-like shape (batch 64, lengths 40)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's setting")
    parser.add_argument(
        "--methods",
        type=lambda t: t.split(","),
        default=["reasonlab", "reasonlab_eager", "mambapy", "sequential"],
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--chunk-sizes", type=_ints, default=None)
    args = parser.parse_args()
    preset = COPY_SHAPE if args.copy else {"batch": 16, "lengths": (64, 256, 1024)}
    lengths = args.lengths or list(preset["lengths"])
    shape = {"batch": args.batch or preset["batch"], "d_inner": args.d_inner}
    shape["d_state"] = args.d_state
    if args.chunk_sizes:
        result = chunk_size_sweep(
            args.chunk_sizes, lengths, repeats=args.repeats, threads=args.threads, **shape
        )
        for length, medians in result["median_s"].items():
            cells = " | ".join(f"{size}: {seconds:.3f} s" for size, seconds in medians.items())
            print(f"L {length} | {cells}")
    else:
        result = scan_benchmark(
            lengths,
            repeats=args.repeats,
            threads=args.threads,
            methods=args.methods,
            memory=not args.no_memory,
            **shape,
        )
        print(format_scan_table(result))
    print()
    print(json.dumps(result, indent=2))
