"""Measured comparisons: each prints a markdown table, writes benchmarks/results/<name>.md + a PNG, and logs both to MLflow."""
