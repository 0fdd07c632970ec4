"""Running swarms: the service, per-swarm dispatcher and supervisor of agent processes."""
