"""mmmos.benchmarks."""
