"""Benchmarks (`make bench`): scripts, and benchlib, the parts of them that are tested."""
