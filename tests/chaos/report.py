"""Write docs/RELIABILITY.md from the figures a chaos run saved (``scripts/chaos``).

python -m tests.chaos.report RESULTS_DIR docs/RELIABILITY.md
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

COLUMNS = [
    ("scenario", "scenario"),
    ("tasks", "tasks"),
    ("succeeded", "succeeded"),
    ("failed", "failed (DLQ)"),
    ("lost", "lost"),
    ("our_reruns", "our re-runs"),
    ("killed_reruns", "re-runs of a killed agent's task"),
    ("duplicated_results", "duplicated results"),
    ("recovery_p50_s", "recovery p50 s"),
    ("recovery_max_s", "recovery max s"),
]


def render(rows: list[dict[str, object]], form: str) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    lines = [
        "# Reliability",
        "",
        "Written by `./scripts/chaos` (the long form of `tests/chaos/`; CI runs the short",
        "form on every change). Each scenario runs real redis-server, cfnd and cfn-agent",
        "processes, injects its fault and asserts: every task ends with exactly one",
        "result or in the DLQ with its reason (`lost` = neither), no side effect re-run",
        "by cfn except tasks in flight on a killed agent, and bounded memory.",
        "",
        f"Form: {form}; {time.strftime('%Y-%m-%d')}; {platform.node()}, "
        f"{platform.machine()}, Python {platform.python_version()}.",
        "",
        head,
        rule,
    ]
    for row in rows:
        cells = ["" if row.get(key) is None else str(row.get(key)) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Notes per scenario", ""]
    for row in rows:
        if row.get("notes"):
            lines.append(f"- **{row['scenario']}**: `{json.dumps(row['notes'], sort_keys=True)}`")
    return "\n".join(lines) + "\n"


def main(results: str, out: str, form: str = "long") -> None:
    rows = [json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))]
    Path(out).write_text(render(rows, form))
    print(f"wrote {out} ({len(rows)} scenarios)")


if __name__ == "__main__":
    main(*sys.argv[1:])
