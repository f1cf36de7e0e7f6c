"""Benchmarks: speed against peer libraries, the bandit ablations and the LASeR loop ablation."""
