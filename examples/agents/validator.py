#!/usr/bin/env python3
"""Example CFN validator (deterministic, for demos and tests).

Votes on the implementers' combined output with the JSON last line cfn expects:
{"vote": "approve"|"reject", "confidence": ..., "output": reasoning, "feedback": [issues]}.

Environment:
  EXAMPLE_APPROVE_FROM_ROUND  reject in earlier Loop 2 rounds, approve from this one
                              on (default 1; 0 = never approve)
  EXAMPLE_CONFIDENCE          confidence of the vote (default 0.95)
  EXAMPLE_ISSUE               the issue message raised when rejecting
  EXAMPLE_MUTE                if set, never answer (a validator that hangs; the round
                              closes without it at its deadline)
"""

import json
import os
import sys

task = json.load(sys.stdin)
if os.environ.get("EXAMPLE_MUTE"):
    import time

    time.sleep(3600)
ctx = task.get("context", {})
round_no = int(ctx.get("round", 1))
approve_from = int(os.environ.get("EXAMPLE_APPROVE_FROM_ROUND", "1"))
approve = approve_from > 0 and round_no >= approve_from
confidence = float(os.environ.get("EXAMPLE_CONFIDENCE", "0.95"))
issue = os.environ.get("EXAMPLE_ISSUE", "input validation is missing")

if approve:
    answer = {
        "vote": "approve",
        "confidence": confidence,
        "output": f"{task['agent_id']}: looks good in round {round_no}",
        "feedback": [],
    }
else:
    answer = {
        "vote": "reject",
        "confidence": confidence,
        "output": f"{task['agent_id']}: not yet (round {round_no})",
        "feedback": [
            {"type": "security", "severity": "high", "message": issue, "location": "app.py"}
        ],
    }
print(json.dumps(answer))
