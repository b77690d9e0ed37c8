"""Benchmarks: each module measures one thing side by side and returns a Markdown section.

`make bench` (python -m benchmarks [NAME ...]) runs them and rewrites their sections of
docs/benchmarks.md, each stamped with the machine and the date.
"""
