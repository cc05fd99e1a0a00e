"""``make bench``: benchmarks that print figures and write benchmarks/results/*.json (never timed tests)."""
