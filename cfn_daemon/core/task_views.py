"""Task replies that always fit in a frame: summaries, clipped records, byte ranges.

Pure functions (no I/O). A stored task may hold a text and outputs far larger than
one reply frame (``daemon.max_frame_bytes``), so

- lists (``task.list``, ``task.wait``, ``dlq.list``) carry *summaries*: the text's
  head, the last bytes of output and stderr, and the full sizes, and stop adding
  tasks once the reply's budget is used (the rest comes with the next page);
- ``task.status`` returns the task whole when it fits, else clipped to the budget;
- ``task.read`` returns any of text / output / stderr by byte range.

Clipped fields are marked (``TaskInfo.clipped``, with ``text_bytes`` and the
result's ``output_bytes`` / ``stderr_bytes``), so a client knows to fetch the rest.
Cuts fall on UTF-8 character boundaries: every piece is valid text.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cfn_client.wire.schema.swarm import TaskInfo

#: Summary sizes, in UTF-8 bytes.
TEXT_PREVIEW = 256
OUTPUT_PREVIEW = 1024
ERROR_PREVIEW = 1024
FEEDBACK_PREVIEW = 2048
#: JSON escapes a control character as \u00XX: six bytes for one. Ranges are sized so
#: that even a chunk of such characters fits the frame.
JSON_WORST_GROWTH = 6

_json = msgspec.json.Encoder()


def _start_of_char(data: bytes, pos: int) -> int:
    """``pos`` moved back to the first byte of the character it is in."""
    while 0 < pos < len(data) and (data[pos] & 0xC0) == 0x80:
        pos -= 1
    return pos


def head(text: str, max_bytes: int) -> tuple[str, bool]:
    """The first ``max_bytes`` of ``text`` (whole characters) and whether it was cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    return data[: _start_of_char(data, max_bytes)].decode(), True


def tail(text: str, max_bytes: int) -> tuple[str, bool]:
    """The last ``max_bytes`` of ``text`` (whole characters) and whether it was cut."""
    data = text.encode()
    if len(data) <= max_bytes:
        return text, False
    cut = len(data) - max_bytes
    while cut < len(data) and (data[cut] & 0xC0) == 0x80:
        cut += 1
    return data[cut:].decode(), True


def byte_range(value: str, offset: int, limit: int) -> tuple[str, int, int]:
    """``(data, next_offset, total_bytes)``: up to ``limit`` bytes of ``value`` from
    ``offset``. An offset inside a character starts at that character; the end never
    splits one. ``limit`` is at least 4, so a chunk always holds a character."""
    data = value.encode()
    total = len(data)
    start = _start_of_char(data, min(max(offset, 0), total))
    end = min(start + max(limit, 4), total)
    if end < total:
        end = _start_of_char(data, end)  # > start: a character is at most 4 bytes
    return data[start:end].decode(), end, total


def encoded_size(task: TaskInfo) -> int:
    return len(_json.encode(task))


def summary(
    task: TaskInfo, text_bytes: int = TEXT_PREVIEW, out_bytes: int = OUTPUT_PREVIEW
) -> TaskInfo:
    """A copy of ``task`` with its big fields shortened (and marked so)."""
    text, cut = head(task.text, text_bytes)
    clipped = cut or task.clipped or task.text_bytes is not None  # cut already in Redis
    out = msgspec.structs.replace(task, text=text)
    if cut and task.text_bytes is None:
        out.text_bytes = len(task.text.encode())
    if task.error:
        out.error, cut = head(task.error, ERROR_PREVIEW)
        clipped |= cut
    res = task.result
    if res is not None:
        output, out_cut = tail(res.output, out_bytes)
        stderr, err_cut = tail(res.stderr, out_bytes)
        error = res.error
        err_clip = False
        if error:
            error, err_clip = head(error, ERROR_PREVIEW)
        feedback = res.feedback
        fb_clip = feedback is not None and len(_json.encode(feedback)) > FEEDBACK_PREVIEW
        out.result = msgspec.structs.replace(
            res,
            output=output,
            stderr=stderr,
            error=error,
            feedback=None if fb_clip else feedback,
            output_bytes=res.output_bytes or (len(res.output.encode()) if out_cut else None),
            stderr_bytes=res.stderr_bytes or (len(res.stderr.encode()) if err_cut else None),
            feedback_clipped=fb_clip or res.feedback_clipped,
        )
        clipped |= out_cut or err_cut or err_clip or fb_clip
        clipped |= bool(res.output_bytes or res.stderr_bytes or res.feedback_clipped)
    out.clipped = clipped
    return out


def fitted(task: TaskInfo, budget: int) -> TaskInfo:
    """``task`` whole if its encoding fits ``budget`` bytes, else summarised with the
    largest previews that fit (halving until they do)."""
    if encoded_size(task) <= budget:
        return task
    size = max(budget // (2 * JSON_WORST_GROWTH), 64)
    while True:
        small = summary(task, text_bytes=size, out_bytes=size)
        if encoded_size(small) <= budget or size <= 64:
            return small
        size //= 2


def page_within(tasks: Iterable[TaskInfo], budget: int) -> tuple[list[TaskInfo], int]:
    """Summaries of ``tasks`` in order until ``budget`` bytes are used; returns them
    and how many were left out. At least one task goes in (a summary is small)."""
    out: list[TaskInfo] = []
    used = 0
    left = 0
    for task in tasks:
        if left:
            left += 1
            continue
        s = summary(task)
        size = encoded_size(s) + 1
        if out and used + size > budget:
            left = 1
            continue
        out.append(s)
        used += size
    return out, left
