"""Measurement scripts, run as files (`.venv/bin/python benchmarks/NAME.py`), each printing one JSON
object last; what they share lives in subpackages that tests import like any module:

- `harness`: what a script sets up and drives (a trained counter-drone system, the monitor service
  under HTTP load);
- `analysis`: fitting and statistics over what was measured;
- `reports`: the tables, plots and Markdown written to docs/results.
"""
