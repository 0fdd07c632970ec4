"""Text that has to survive argv, prompts and Redis keys."""

from __future__ import annotations

# What a NUL byte in agent output becomes in a prompt: visible, and carried by argv.
NUL_MARK = "\N{SYMBOL FOR NULL}"


def without_nul(text: str) -> str:
    """``text`` with every NUL byte shown as ``NUL_MARK`` (no argv can carry NUL)."""
    return text.replace("\x00", NUL_MARK) if "\x00" in text else text
