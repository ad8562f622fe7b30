"""CLI command modules, one per feature area."""
