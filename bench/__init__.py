"""Benchmarks (run as scripts: ``python bench/<name>.py``); a package for the type check
and the unit tests of their pure parts."""
