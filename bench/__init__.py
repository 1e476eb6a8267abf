"""Benchmarks on the local stack (`make bench`): figures reported side by side, never asserted
by timed tests. Results go to bench/results/<timestamp>.json."""
