"""Benchmarks of docs/performance.md: the ratios P1–P6, measured in one run on synthetic twins.

``python -m benchmarks`` (or ``python benchmarks/run.py``) runs them and prints the table;
``benchmarks/networks_speed.py`` times the networks' forward + backward on their own.
"""
