"""The clouds on a realistic path (issue 13, target 2): what the three latency cases share.

Each case runs one emulator behind ``LatencyProxy`` (10 ms round trip, 25 MB/s a connection),
one or more filestore-fastapi servers under uvicorn (curl their client) and the cloud's own
SDK uploading the same file from disk in a process of its own, all through the same proxy.
The contenders take turns, their order rotated every round, at least ``MIN_ROUNDS`` rounds;
ratios are taken within a round, then their median (and min / max) reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .cases import Bench, CaseResult, Target, by, median, mib, size_label, warm_up
from .latency_proxy import LatencyProxy
from .measure import Contender, MiB, Running, Sample, curl_post, serve

RTT, RATE = 0.010, 25e6
MIN_ROUNDS = 5
SLACK = 32 * MiB
"""What the memory bound allows beyond the parts themselves."""

COLUMNS = [
    "contender",
    "wall s min / median / max",
    "MiB/s",
    "x SDK min / median / max",
    "peak RSS MiB",
    "RSS growth MiB",
    "process CPU s",
]


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(values), median(values), max(values)))


def proxy_to(stack: ExitStack, endpoint: str) -> LatencyProxy:
    port = urllib.parse.urlsplit(endpoint).port
    assert port is not None
    return stack.enter_context(LatencyProxy(("127.0.0.1", port), rtt=RTT, rate=RATE))


def path_label() -> str:
    return f"a {RTT * 1000:.0f} ms, {RATE / 1e6:.0f} MB/s-a-connection proxy"


def sdk_sample(contender: str, size: int, arguments: list[str], env: dict[str, str]) -> Sample:
    """``python -m benchmarks.<module> ...`` in a process of its own: its JSON figures as a
    ``Sample`` (timed from the call that uploads, the SDK's client already made)."""
    done = subprocess.run(
        [sys.executable, "-m", *arguments],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    figures = json.loads(done.stdout)
    return Sample(
        contender=contender,
        size=size,
        status=200,
        seconds=figures["seconds"],
        rss_before=figures["rss_before"],
        peak_rss=figures["peak_rss"],
        write_bytes=0,
        read_bytes=0,
        server_cpu=figures["cpu_seconds"],
        loop_cpu=figures["cpu_seconds"],
        client_cpu=0.0,
    )


@dataclass
class Mine:
    """One filestore-fastapi contender: its server and the memory it may use."""

    contender: Contender
    running: Running
    bound: int | None = None
    """Peak RSS growth allowed, None for no target."""
    bound_text: str = ""


def start(
    stack: ExitStack, bench: Bench, contender: Contender, env: dict[str, str], warm_size: int
) -> Running:
    running = stack.enter_context(serve(contender, bench.scratch, env))
    warm_up(running, bench.file(warm_size))  # several parts: the SDK's models, threads, connections
    return running


@dataclass
class Plan:
    key: str
    title: str
    size: int
    sdk: Contender
    run_sdk: Callable[[], Sample]
    mine: list[Mine]
    empty: Callable[[], None]
    """Empties the bucket or container between uploads (not measured)."""
    default: str | None
    """The key of the contender with the default config, whose ratio has a target."""
    target: float | None = 1.10
    notes: list[str] = field(default_factory=list)


def run(bench: Bench, plan: Plan) -> CaseResult:
    path = bench.file(plan.size)
    servers = {mine.contender.key: mine for mine in plan.mine}

    def measure(key: str) -> Sample:
        if key == plan.sdk.key:
            return plan.run_sdk()
        running = servers[key].running
        sample = running.measure(
            lambda: curl_post(running.server.url + "/one", [(path, "cloud.bin")]), plan.size
        )
        if sample.status != 200:
            raise RuntimeError(f"{key} answered {sample.status}")
        return sample

    keys = [plan.sdk.key, *servers]
    plan.empty()
    samples: list[Sample] = []
    ratios: dict[str, list[float]] = {key: [] for key in servers}
    for turn in range(max(bench.runs, MIN_ROUNDS)):
        this_round: dict[str, Sample] = {}
        for key in keys[turn % len(keys) :] + keys[: turn % len(keys)]:
            this_round[key] = measure(key)
            plan.empty()
        samples += this_round.values()
        for key in servers:
            ratios[key].append(this_round[key].seconds / this_round[plan.sdk.key].seconds)
    rows = []
    for key in keys:
        found = by(samples, key)
        wall = [s.seconds for s in found]
        label = plan.sdk.label if key == plan.sdk.key else servers[key].contender.label
        rows.append(
            [
                label,
                spread(wall),
                f"{plan.size / MiB / median(wall):.0f}",
                spread(ratios[key]) if key in ratios else "1.00",
                mib(median(s.peak_rss for s in found)),
                mib(max(s.rss_growth for s in found)),
                f"{median(s.server_cpu for s in found):.2f}",
            ]
        )
    targets = []
    if plan.default is not None and plan.target is not None:
        ratio = median(ratios[plan.default])
        targets.append(
            Target(
                f"{servers[plan.default].contender.label} (default config): wall time <= "
                f"{plan.target:.2f} x {plan.sdk.label}",
                f"{ratio:.2f}",
                ratio <= plan.target,
            )
        )
    for mine in plan.mine:
        if mine.bound is None:
            continue
        growth = max(s.rss_growth for s in by(samples, mine.contender.key))
        targets.append(
            Target(
                f"{mine.contender.label}: RSS growth <= {mine.bound_text}",
                f"{growth / MiB:.1f} MiB of {mine.bound / MiB:.0f}",
                growth <= mine.bound,
            )
        )
    return CaseResult(
        key=plan.key,
        title=plan.title,
        columns=COLUMNS,
        rows=rows,
        targets=targets,
        samples=samples,
        notes=[
            f"{len(ratios[keys[1]])} rounds; x SDK is per round (both from the same minute of a shared",
            "machine), its median and extremes; the order of the contenders rotates every round.",
            "RSS growth is the largest of the rounds, peak RSS and CPU the medians.",
            "The SDK runs in a process of its own, timed from its upload call; filestore-fastapi is",
            "timed by curl, its client, for the whole request (body to uvicorn, claim, parts, commit).",
            "All go through the same proxy to the same emulator, which shares the two cores with them.",
            *plan.notes,
        ],
    )


def title(number: int, what: str, size: int, part_size: int) -> str:
    return (
        f"{number}. {what} through {path_label()}, one {size_label(size)} file "
        f"(part_size {size_label(part_size)})"
    )


def markdown(result: CaseResult) -> str:
    """The case as ``report.write`` prints it (that module needs matplotlib to import)."""
    lines = [f"## {result.title}", ""]
    lines += ["| " + " | ".join(result.columns) + " |", "|" + " --- |" * len(result.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in result.rows]
    lines.append("")
    for target in result.targets:
        lines.append(f"- {'held' if target.held else 'NOT held'}: {target.text} (measured {target.value})")
    lines += ["", *result.notes]
    return "\n".join(lines)


def standalone(
    argv: list[str], case: Callable[[Bench, ExitStack, int], CaseResult], default_mib: int, prog: str
) -> int:
    """``python -m benchmarks.<case> [--size-mib N] [--runs N]``: the case alone, its table printed."""
    import argparse
    import shutil
    import tempfile
    import time

    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{prog}")
    parser.add_argument(
        "--size-mib", type=int, default=default_mib, help=f"file size (default {default_mib})"
    )
    parser.add_argument("--runs", type=int, default=MIN_ROUNDS, help=f"rounds (at least {MIN_ROUNDS})")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="filestore-bench-"))
    started = time.perf_counter()
    try:
        with ExitStack() as stack:
            result = case(Bench(scratch=scratch, runs=args.runs), stack, args.size_mib * MiB)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(markdown(result))
    print(f"\n{time.perf_counter() - started:.0f} s; python -m benchmarks.{prog} {' '.join(argv)}")
    return 0
