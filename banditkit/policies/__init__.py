"""Bandit policies: one module per policy."""
