"""LASeR on top of banditkit: the ``laser`` CLI, its configuration, the training loop, run folders, reports.

``laser run`` trains a policy LLM by iterative DPO while a bandit picks the reward model for each batch
(LASeR, arXiv 2410.01735); every baseline runs through the same loop. Importing this package is cheap:
torch and transformers load only when a run starts.
"""

__version__ = "0.1.0"
