"""See the package docstring of orchestration.defs."""
