"""cfn-agent: what a local child or a remote host runs (runtime, executors, process
control, agent types). Needs no api, swarm or cfnloop.
"""
