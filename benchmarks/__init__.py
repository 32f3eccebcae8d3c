"""Benchmark scripts: one per domain, the core benchmark, the GPU check and run_all (see docs/benchmarks.md)."""
