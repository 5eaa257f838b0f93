"""``python -m benchmarks``: run the cases and write ``docs/benchmarks/``.

``make bench`` runs it in the benchmark venv. ``--quick`` divides every size by 16 (a
smoke run of the machinery, not a result), ``--cases 1,3`` runs a subset.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from . import report
from .cases import CASES, Bench, CaseResult
from .machine import describe

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated case numbers (default: all)"
    )
    parser.add_argument("--runs", type=int, default=5, help="rounds per case (default: 5)")
    parser.add_argument("--quick", action="store_true", help="sizes / 16, for a smoke run")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks", help="results directory")
    args = parser.parse_args(argv)
    if shutil.which("curl") is None:
        print("the benchmarks need curl as their client: apt-get install curl", file=sys.stderr)
        return 2
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="filestore-bench-"))
    results: list[CaseResult] = []
    try:
        bench = Bench(scratch=scratch, runs=args.runs, scale=16 if args.quick else 1)
        with ExitStack() as stack:
            for key in args.cases.split(","):
                case_started = time.perf_counter()
                result = CASES[key.strip()](bench, stack)
                results.append(result)
                print(f"{result.title}: {time.perf_counter() - case_started:.0f} s", flush=True)
        machine = describe(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    given = sys.argv[1:] if argv is None else argv
    command = "make bench" if not (args.quick or given) else "python -m benchmarks " + " ".join(given)
    path = report.write(args.output, results, machine, command, time.perf_counter() - started)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
