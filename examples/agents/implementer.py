#!/usr/bin/env python3
"""Example CFN implementer (deterministic, for demos and tests).

Reads the task JSON cfn-agent writes on stdin and answers with the JSON last line
cfn expects: {"output": ..., "confidence": ...}.

Environment (set per agent type in cfnd.toml, [agent_types.NAME] env = {...}):
  EXAMPLE_CONFIDENCE  comma list: the confidence for Loop 3 iteration 1, 2, ...
                      (the last value repeats); default 0.9
  EXAMPLE_LOG         if set, append one JSON line per execution (round, iteration,
                      and the feedback this implementer received) to that file
  EXAMPLE_SLEEP       seconds to work before answering (default 0)
"""

import json
import os
import sys

task = json.load(sys.stdin)
ctx = task.get("context", {})
iteration = int(ctx.get("iteration", 1))
schedule = [float(x) for x in os.environ.get("EXAMPLE_CONFIDENCE", "0.9").split(",")]
confidence = schedule[min(iteration, len(schedule)) - 1]
feedback = ctx.get("feedback", "")

if os.environ.get("EXAMPLE_LOG"):
    with open(os.environ["EXAMPLE_LOG"], "a") as log:
        log.write(
            json.dumps(
                {
                    "agent": task["agent_id"],
                    "run": ctx.get("run"),
                    "round": ctx.get("round"),
                    "iteration": iteration,
                    "feedback": feedback,
                    "prompt": task["text"],
                }
            )
            + "\n"
        )

if os.environ.get("EXAMPLE_SLEEP"):
    import time

    time.sleep(float(os.environ["EXAMPLE_SLEEP"]))

work = f"{task['agent_id']} implemented: {task['text'].splitlines()[0]}"
if feedback:
    work += f" (addressing {len(feedback.splitlines())} lines of feedback)"
print(work)
print(json.dumps({"output": work, "confidence": confidence}))
