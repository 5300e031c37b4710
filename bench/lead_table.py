"""The table BENCHMARKS.md leads with: every current figure against the peers.

Each benchmark script that measures a figure calls `update(rows)` (with
`--update-benchmarks`); a row is keyed by its first cell (the figure's
name), so a script replaces its own rows and leaves every other row as it
is. The table sits between two markers in BENCHMARKS.md:

    <!-- lead-table:begin -->
    | figure | stencil | peers, same run | target | met | measured |
    ...
    <!-- lead-table:end -->

Rows keep the order they first appeared in; new ones go at the end.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
BEGIN = "<!-- lead-table:begin -->"
END = "<!-- lead-table:end -->"
HEADER = [
    "| figure | stencil | peers, same run | target | met | measured |",
    "|---|---|---|---|---|---|",
]


def commit() -> str:
    """The commit measured, marked when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        # BENCHMARKS.md itself is not the code measured: a run after another
        # run's update is still of the commit.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)BENCHMARKS.md"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stamp() -> str:
    """When and where: date, commit, load average at the end of the run."""
    load = os.getloadavg()[0]
    return f"{datetime.date.today().isoformat()}, {commit()}, load {load:.1f}"


def row(figure: str, stencil: str, peers: str, target: str, met: bool | None) -> list[str]:
    verdict = "–" if met is None else ("yes" if met else "**no**")
    return [figure, stencil, peers, target, verdict, stamp()]


def update(rows: list[list[str]], path: Path = BENCHMARKS) -> None:
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} block to update")
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    current: dict[str, str] = {}
    for line in body.strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("figure", "") and not re.fullmatch(r"-+", cells[0]):
            current[cells[0]] = line
    for cells in rows:
        current[cells[0]] = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    table = "\n".join(HEADER + list(current.values()))
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
