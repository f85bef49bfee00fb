"""The performance benchmark (``make bench``, docs/performance.md); not part of the package."""
