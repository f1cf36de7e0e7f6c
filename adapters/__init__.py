"""LLM pieces of LASeR, importable as ``laser_adapters``: reward models and their registry, context encoders,
preference pairs, the DPO step, bandit rewards, the RM selectors and the table of selection methods.

Modules load torch and transformers when imported, so import the one you need, e.g.
``from laser_adapters.methods import make_selector``.
"""
