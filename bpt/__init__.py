"""bpt: bi-layered parallel training of CNNs (after BPT-CNN, Chen et al., IEEE TPDS 2019).

`bpt` holds the pure parts (models, data sets, partitioning, the merge rule, local
training); `bpt.broker` talks to Redis, `bpt.workers` to Celery, `bpt.cli` to the terminal.
"""

__version__ = "0.1.0"
