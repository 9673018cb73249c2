"""Benchmarks for issue 7 (and the soak test of issue 8): `python -m bench --help`."""
