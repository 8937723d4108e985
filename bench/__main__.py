"""``python -m bench``: run the scenarios and print the Markdown table."""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
import traceback
from typing import Optional, Sequence

from .harness import TRANSPORTS, Row, summary, table
from .scenarios import FULL, QUICK, SCENARIOS


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{what}: choose from {', '.join(known)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small N and few runs: checks the harness, measures little")
    parser.add_argument("--scenarios", "-s", default=",".join(SCENARIOS),
                        type=lambda text: _names(text.upper(), list(SCENARIOS), "scenarios"),
                        help="comma-separated, e.g. B1,B2 (default: all)")
    parser.add_argument("--transports", "-t", default=",".join(TRANSPORTS),
                        type=lambda text: _names(text.lower(), TRANSPORTS, "transports"),
                        help=f"comma-separated (default: {','.join(TRANSPORTS)})")
    parser.add_argument("--runs", type=int, help="override the number of repetitions")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    scale = QUICK if args.quick else FULL
    if args.runs is not None:
        scale = dataclasses.replace(scale, runs=args.runs, heavy_runs=args.runs)
    load = os.getloadavg()[0]
    started = time.monotonic()
    rows: list[Row] = []
    failures: list[str] = []
    for scenario in args.scenarios:
        for transport in args.transports:
            print(f"{scenario} {transport} ...", file=sys.stderr, flush=True)
            try:
                new = SCENARIOS[scenario](transport, scale)
            except Exception as err:  # the other scenarios still get measured
                traceback.print_exc()
                failures.append(f"{scenario} {transport} failed: {str(err).splitlines()[0]}")
                continue
            print(summary(new), file=sys.stderr, flush=True)
            rows += new
    header = (f"`python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}`".
              replace(" `", "`") +
              f": {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {load:.2f} at start and {os.getloadavg()[0]:.2f} at the end, "
              f"{time.monotonic() - started:.0f} s")
    print(table(rows, header))
    for failure in failures:
        print(f"\n{failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
