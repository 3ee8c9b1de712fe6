"""The machine a run is on: devices and the dtype rule, free and peak memory, out-of-memory errors."""
