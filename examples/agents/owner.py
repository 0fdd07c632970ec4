#!/usr/bin/env python3
"""Example product owner (Loop 4): PROCEED, DEFER (with backlog items) or ESCALATE.

Environment: EXAMPLE_DECISION (default PROCEED), EXAMPLE_BACKLOG (items separated by ';').
"""

import json
import os
import sys

json.load(sys.stdin)
decision = os.environ.get("EXAMPLE_DECISION", "PROCEED")
backlog = [x for x in os.environ.get("EXAMPLE_BACKLOG", "").split(";") if x]
print(json.dumps({"output": f"{decision}: decided by the example owner", "feedback": backlog}))
