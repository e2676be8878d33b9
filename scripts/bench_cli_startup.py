"""How long `qledger --help` takes to start, against bare `python -c pass` in the same run.

    python scripts/bench_cli_startup.py [--runs 15] [--compare /path/to/other/checkout]

Runs each command `--runs` times, alternating, and prints the median wall time of each and
the ratio, plus the same for `qledger --version` and `qledger verify --help`. The machine's
load moves the absolute figures; the ratio to the interpreter's own start is what to compare.
``--compare`` also times `qledger --help` from another checkout (e.g. one before the imports
were deferred) in the same alternating loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "qledger --help": [sys.executable, "-m", "cli", "--help"],
    "qledger --version": [sys.executable, "-m", "cli", "--version"],
    "qledger verify --help": [sys.executable, "-m", "cli", "verify", "--help"],
}


def _once(argv: list[str], root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--compare", type=Path, help="another checkout to time --help in")
    args = parser.parse_args()
    commands = {name: (argv, ROOT) for name, argv in COMMANDS.items()}
    if args.compare is not None:
        commands[f"--help in {args.compare}"] = (COMMANDS["qledger --help"], args.compare)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for argv, root in commands.values():  # warm the page cache once
        _once(argv, root)
    for _ in range(args.runs):
        for name, (argv, root) in commands.items():  # alternate: load drifts hit all alike
            times[name].append(_once(argv, root))
    base = statistics.median(times["python -c pass"])
    width = max(len(name) for name in times) + 2
    print(f"{'command':<{width}} {'median s':>9} {'min s':>7} {'x python -c pass':>17}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<{width}} {median:9.3f} {min(samples):7.3f} {median / base:17.1f}")


if __name__ == "__main__":
    main()
