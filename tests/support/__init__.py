"""Helpers shared by the unit tests and the benches (no pytest import: the benches run without it)."""
