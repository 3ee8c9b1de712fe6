"""Benchmarks: quality and speed measurements on the shared real-image data (``python -m ...``)."""
