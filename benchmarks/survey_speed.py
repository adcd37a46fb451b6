"""Analysis time over a bare meta forward across a survey's models, from its CSV (docs/models.csv by
default): the table benchmarks/README.md quotes. Both times come from the same worker process per
model (``convlens survey``); models the survey analyzed with a real run (backend ``cpu``) are left out
and listed, as are models without both times.

    python benchmarks/survey_speed.py [--csv docs/models.csv] [--prefix timm:]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", default=str(ROOT / "docs" / "models.csv"))
    parser.add_argument("--prefix", default="timm:", help="models whose name starts so (default: timm:)")
    args = parser.parse_args()
    rows = [r for r in csv.DictReader(open(args.csv, newline="")) if r["model"].startswith(args.prefix)]
    timed = [r for r in rows if r["backend"] == "meta" and r["analysis_s"] and r["forward_s"]
             and float(r["forward_s"]) > 0]
    left = [r for r in rows if r not in timed]
    ratios = sorted((float(r["analysis_s"]) / float(r["forward_s"]), r["model"]) for r in timed)
    values = [x for x, _ in ratios]
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    print("| models timed | median | 99th percentile | max | above 4x | above 8x |")
    print("|--:|--:|--:|--:|--:|--:|")
    print(f"| {len(values)} | {statistics.median(values):.2f}x | {p99:.2f}x | {values[-1]:.1f}x ({ratios[-1][1]}) "
          f"| {sum(x > 4 for x in values)} | {sum(x > 8 for x in values)} |")
    print()
    print("Above 8x: " + (", ".join(f"{m} {x:.1f}x" for x, m in ratios if x > 8) or "none"))
    print("Left out (real run or no timing): " + (", ".join(f"{r['model']} ({r['backend'] or r['status']})"
                                                           for r in left) or "none"))


if __name__ == "__main__":
    main()
