"""Command-line tools built on the library (scaling/) and the analysis (analysis/): run with python -m tools.X."""
