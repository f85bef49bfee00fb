"""The performance benchmark (``make bench``); see docs/performance.md.

Not part of the package: a bench-only site (``bench.settings``), a load
generator and the orchestration that starts everything on loopback.
"""
