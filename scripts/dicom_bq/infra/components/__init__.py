"""ComponentResources of the export path, one per module."""
