"""Every Python sample in the docs and the README runs, so the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def samples() -> list[tuple[str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for number, match in enumerate(FENCE.finditer(page.read_text()), start=1):
            found.append((f"{page.relative_to(ROOT)}#{number}", match.group(1)))
    return found


def test_the_docs_have_samples() -> None:
    assert len(samples()) >= 8


@pytest.mark.parametrize(("where", "code"), samples(), ids=[where for where, _ in samples()])
def test_sample_runs(where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # samples write uploads relative to the working directory
    exec(compile(code, where, "exec"), {"__name__": "docs_sample"})
