"""Benchmark: the quick CPU preset of the CoT two-hop study, timed end to end, with its targets.

    python benchmarks/cot_twohop_quick.py [--seeds K] [--out DIR] [--determinism]

Prints a markdown table (final ID/OOD two-hop accuracy and steps to 0.95 per run, total wall
time) and whether the acceptance targets hold: CoT pattern h r1 b r2 t ID >= 0.99 and OOD >= 0.95,
no CoT OOD <= 0.05, the whole study within 300 s. ``--determinism`` reruns one configuration in a
fresh process and checks that its metrics are identical (elapsed time aside).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ID, OOD = "test_inferred_iid", "test_inferred_ood"


def run_study(out: Path, seeds: int) -> float:
    command = [
        sys.executable,
        "-m",
        "reasonlab",
        "study",
        "cot-twohop",
        "--preset",
        "cpu",
        "--seeds",
        str(seeds),
        "--out",
        str(out),
        "--set",
        "log.progress=false",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def metrics_without_time(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in records]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--determinism", action="store_true")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cot-twohop-bench-"))
    wall = run_study(out, args.seeds)
    summary = json.loads((out / "summary.json").read_text())
    print(
        f"\nquick CoT two-hop study, {args.seeds} seed(s), {os.cpu_count()} cores: "
        f"{wall:.0f} s wall ({out})\n"
    )
    print(
        "| run | final ID | final OOD | steps to 0.95 ID | steps to 0.95 OOD | OOD bridge "
        "| run wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, run in summary["runs"].items():
        final, reached = run["final"], run["steps_to_threshold"]
        bridge = final.get(f"{OOD}.bridge")
        print(
            f"| {name} | {final[ID]:.3f} | {final[OOD]:.3f} | {reached[ID]} | {reached[OOD]} | "
            f"{'–' if bridge is None else f'{bridge:.3f}'} | {run['wall_s']:.0f} |"
        )
    runs = summary["runs"]
    interleaved = [r for n, r in runs.items() if n.startswith("cot-interleaved")]
    no_cot = [r for n, r in runs.items() if n.startswith("no-cot")]
    checks = {
        "interleaved ID >= 0.99": all(r["final"][ID] >= 0.99 for r in interleaved),
        "interleaved OOD >= 0.95": all(r["final"][OOD] >= 0.95 for r in interleaved),
        "no CoT OOD <= 0.05": all(r["final"][OOD] <= 0.05 for r in no_cot),
        "study within 300 s (1 seed)": args.seeds > 1 or wall <= 300,
    }
    if args.determinism:
        first = out / "runs" / "cot-interleaved-s0"
        again = Path(tempfile.mkdtemp(prefix="cot-twohop-again-")) / "run"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "reasonlab",
                "run",
                str(first / "config.json"),
                "--out",
                str(again),
                "--set",
                "log.progress=false",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        checks["same config and seed -> same metrics"] = metrics_without_time(
            first / "metrics.jsonl"
        ) == metrics_without_time(again / "metrics.jsonl")
    print()
    for check, ok in checks.items():
        print(f"- {check}: {'yes' if ok else 'NO'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
