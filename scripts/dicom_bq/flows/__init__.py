"""What the commands do, with no CLI in them: export, verify, preflight."""
