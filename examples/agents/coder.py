#!/usr/bin/env python3
"""Example CFN implementer that really edits files (deterministic, for demos and tests).

cfn runs it with its git worktree as the current directory. It applies the edits in
``EXAMPLE_EDITS`` (a JSON list; each ``{"path": ..., "write": text}`` or
``{"path": ..., "replace": [old, new]}``) and answers with the JSON last line cfn
expects: ``{"output": ..., "confidence": ...}``. ``EXAMPLE_CONFIDENCE`` (default 0.9)
is the confidence it reports.
"""

import json
import os
import sys
from pathlib import Path

task = json.load(sys.stdin)
edits = json.loads(os.environ.get("EXAMPLE_EDITS", "[]"))
done = []
for edit in edits:
    path = Path(edit["path"])
    if "write" in edit:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(edit["write"])
        done.append(f"wrote {path}")
    elif "replace" in edit and path.exists():
        old, new = edit["replace"]
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            done.append(f"edited {path}")
summary = f"{task['agent_id']}: " + ("; ".join(done) or "nothing to change")
print(summary)
print(
    json.dumps(
        {"output": summary, "confidence": float(os.environ.get("EXAMPLE_CONFIDENCE", "0.9"))}
    )
)
