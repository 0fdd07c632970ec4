"""The CFN loop in motion: run drivers, epics and sprints, over swarms and the pure core."""
