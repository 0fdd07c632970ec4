"""cfnctl commands by noun; each one parses, makes one client call and renders."""
