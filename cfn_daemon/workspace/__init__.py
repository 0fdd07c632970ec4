"""Git workspaces: per-agent worktrees and branches, candidate merges, review diffs.

``gitcmd`` runs git (timeouts, environment, small queries) and ``errors`` holds the
errors; ``worktrees`` creates and commits in cfn's worktrees; ``merge`` merges branches
into a candidate and diffs it; ``apply`` brings the result into the user's branch.
Each module imports only the ones listed before it.
"""
