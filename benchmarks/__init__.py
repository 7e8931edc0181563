"""Benchmarks (`make bench`): scripts, and the parts of them that are tested: benchprep (data
preparation), benchmeasure (measuring runs, the floor) and benchreport (results and chart)."""
