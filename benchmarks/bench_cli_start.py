"""Start-up time of the small commands, beside the import they no longer pay.

    python benchmarks/bench_cli_start.py      # prints a markdown table

Each row is the fastest of ``--repeats`` fresh processes (the installed ``convlens`` script beside this
interpreter), after one untimed run that warms the file cache: the commands that need no model
(``--help``, ``--version``, ``arith``) against ``python -c "import torch"`` and an empty interpreter.
Quote ratios.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = str(Path(sys.executable).with_name("convlens"))
CASES = {
    "convlens arith conv -i 224 -k 7 -s 2 -p 3": [SCRIPT, "arith", "conv", "-i", "224", "-k", "7", "-s", "2", "-p", "3"],
    "convlens --help": [SCRIPT, "--help"],
    "convlens arith --help": [SCRIPT, "arith", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import convlens; convlens.analyze'": [sys.executable, "-c", "import convlens; convlens.analyze"],
    "python -c pass": [sys.executable, "-c", "pass"],
}


def fastest(argv: list[str], repeats: int) -> float:
    subprocess.run(argv, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = {name: fastest(argv, args.repeats) for name, argv in CASES.items()}
    torch_s = times["python -c 'import torch'"]
    print("| command | seconds | / import torch |")
    print("|---|--:|--:|")
    for name, seconds in times.items():
        print(f"| `{name}` | {seconds:.3f} | {seconds / torch_s:.3f}x |")


if __name__ == "__main__":
    main()
