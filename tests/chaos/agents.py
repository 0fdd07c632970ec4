"""In-process (``python`` kind) agents of the chaos suite."""

from __future__ import annotations

from typing import Any

OUTPUT_BYTES = 10_000


def big_output(task: Any) -> dict[str, Any]:
    """A task whose result carries 10 kB, to measure what stored results cost."""
    return {"output": "x" * OUTPUT_BYTES, "confidence": 1.0}
