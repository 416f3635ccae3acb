"""The tables, plots and Markdown reports the benchmarks write to docs/results."""
