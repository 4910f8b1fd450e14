"""A stack: its config as Pulumi merges it, its offline plan, and its outputs contract."""
