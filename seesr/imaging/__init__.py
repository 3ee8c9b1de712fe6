"""Image operations shared by the engines and the API: conversions and sizes, the tiler, the
pre-filter, colour fixes, comparison pictures, fidelity and quality metrics."""
