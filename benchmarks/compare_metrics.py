"""Compare every metrics.jsonl under two output folders record for record, ``elapsed_s`` aside.

Used to show that a change leaves a run's numbers as they were: train the same configs with the
old and the new code into OLD and NEW, then ``python benchmarks/compare_metrics.py OLD NEW``.
Exit code 0 when every record is identical, 1 otherwise (docs/RELIABILITY.md, section 14).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("elapsed_s", None)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args()
    identical = True
    found = sorted(args.old.rglob("metrics.jsonl"))
    for old in found:
        relative = old.relative_to(args.old)
        new = args.new / relative
        same = new.exists() and records(old) == records(new)
        identical &= same
        print(f"{relative}: {len(records(old))} records, {'identical' if same else 'DIFFERENT'}")
    if not found:
        print(f"{args.old}: no metrics.jsonl found")
        return 1
    print("all identical" if identical else "differences found")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
