"""Write the results page (Markdown), the raw figures (JSON) and the PNG plots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from .cases import CaseResult
from .measure import ALL, Sample

SHORT = {contender.label: contender.short for contender in ALL}

#: Per case: the columns to plot, each (column, axis label, log scale).
PLOTS: dict[str, list[tuple[str, str, bool]]] = {
    "case1": [("MiB/s", "throughput, MiB/s", False), ("peak RSS MiB", "server peak RSS, MiB", False),
              ("written / size", "bytes written / file size", False)],
    "case2": [("latency ms", "time to 413, ms (log)", True),
              ("read by server MiB", "read by server, MiB (log)", True)],
    "case3": [("requests/s", "requests/s", False), ("p99 ms", "p99 latency, ms", False)],
    "case4": [("MiB/s", "throughput, MiB/s", False), ("peak RSS MiB", "server peak RSS, MiB", False)],
    "case6": [("wall s", "wall time, s", False), ("RSS growth MiB", "RSS growth, MiB", False)],
    **{case: [("MiB/s", "throughput (median), MiB/s", False), ("RSS growth MiB", "RSS growth, MiB", False)]
       for case in ("case7", "case8", "case9")},
}  # fmt: skip


def _raw(sample: Sample) -> dict[str, Any]:
    """A sample for results.json: latencies summarised, files left after the request counted."""
    raw = dataclasses.asdict(sample)
    raw["files_after"] = len(raw.pop("leftovers"))
    latencies = raw.pop("latencies")
    if len(latencies) > 1:
        ordered = sorted(latencies)
        raw["latency_p50"] = ordered[len(ordered) // 2]
        raw["latency_p99"] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return raw


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def plot(result: CaseResult, directory: Path) -> Path | None:
    """Bar charts of the case's medians; case 1 groups its bars by file size."""
    panels = PLOTS.get(result.key)
    if not panels:
        return None
    grouped = "size" in result.columns
    contender_at = result.columns.index("contender")
    groups = (
        sorted({row[0] for row in result.rows}, key=[row[0] for row in result.rows].index)
        if grouped
        else [""]
    )
    names = list(dict.fromkeys(SHORT.get(row[contender_at], row[contender_at]) for row in result.rows))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    width = 0.8 / len(groups)
    for axis, (column, label, log) in zip(axes[0], panels, strict=True):
        at = result.columns.index(column)
        for number, group in enumerate(groups):
            values = {
                SHORT.get(row[contender_at], row[contender_at]): float(row[at])
                for row in result.rows
                if not grouped or row[0] == group
            }
            positions = [i + number * width - 0.4 + width / 2 for i in range(len(names))]
            axis.bar(positions, [values.get(name, 0.0) for name in names], width, label=group or None)
        axis.set_xticks(range(len(names)), names, rotation=20, ha="right")
        axis.set_ylabel(label)
        if log:
            axis.set_yscale("log")
        if grouped:
            axis.legend(title="file size")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(result.title)
    figure.tight_layout()
    path = directory / f"{result.key}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _case_number(key: str) -> int:
    digits = "".join(ch for ch in key if ch.isdigit())
    return int(digits) if digits else 10**6


def _earlier_sections(
    directory: Path, run_now: set[str]
) -> dict[str, tuple[str, list[str], list[dict[str, Any]]]]:
    """The cases of the results already in ``directory`` that this run did not repeat, so a
    run of some cases (``--cases 1,3``) replaces theirs and keeps the others' sections."""
    try:
        earlier = json.loads((directory / "results.json").read_text())
        page = (directory / "results.md").read_text()
    except (OSError, ValueError):
        return {}
    kept = {}
    for case in earlier.get("cases", []):
        if case["key"] in run_now:
            continue
        section = case.get("markdown")
        if section is None:  # written before sections were stored: cut it out of the page
            start = page.find(f"## {case['title']}\n")
            if start < 0:
                continue
            end = page.find("\n## ", start + 1)
            section = page[start : end + 1 if end >= 0 else len(page)].split("\n")
        kept[case["key"]] = (case["title"], section, case["samples"])
    return kept


def write(
    directory: Path,
    results: Sequence[CaseResult],
    machine: Sequence[tuple[str, str]],
    command: str,
    seconds: float,
) -> Path:
    """``results.md`` (tables, targets, machine), ``results.json`` and one PNG per plotted case."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in {seconds / 60:.1f} minutes. Medians of the rounds (min / median / max",
        "where a column says so); each round runs every contender of a case once, in turn (in a rotated",
        "order in cases 1 and 3). Ratios (`x (a)`, `x boto3`) are per round, then medians.",
        "",
        "## Machine",
        "",
        *markdown_table(["", ""], machine),
        "",
    ]
    sections: dict[str, tuple[str, list[str], list[dict[str, Any]]]] = {}
    for result in results:
        section = [f"## {result.title}", "", *markdown_table(result.columns, result.rows), ""]
        if result.targets:
            section += ["Targets for filestore-fastapi:", ""]
            section += [
                f"- {'held' if t.held else '**missed**'}: {t.text} (measured {t.value})"
                for t in result.targets
            ]
            section.append("")
        for extra in result.extra.values():
            section += [f"### {extra['title']}", "", *markdown_table(extra["columns"], extra["rows"]), ""]
        section += [f"{note}" for note in result.notes]
        image = plot(result, directory)
        if image is not None:
            section += ["", f"![{result.title}]({image.name})"]
        section.append("")
        sections[result.key] = (result.title, section, [_raw(s) for s in result.samples])
    kept = _earlier_sections(directory, set(sections))
    if kept:
        titles = ", ".join(title.split(" ", 1)[0].rstrip(".") for title, _, _ in kept.values())
        lines += [f"Cases {titles} were not run this time: their sections are kept from the earlier run.", ""]
    ordered = sorted({**kept, **sections}.items(), key=lambda item: _case_number(item[0]))
    for _, (_, section, _) in ordered:
        lines += section
    path = directory / "results.md"
    path.write_text("\n".join(lines))
    raw = {
        "machine": dict(machine),
        "cases": [
            {"key": key, "title": title, "markdown": section, "samples": samples}
            for key, (title, section, samples) in ordered
        ],
    }
    (directory / "results.json").write_text(json.dumps(raw, indent=1) + "\n")
    return path
