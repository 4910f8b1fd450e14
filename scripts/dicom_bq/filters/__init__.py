"""Export filter files and the analysis queries run on the exported table."""
