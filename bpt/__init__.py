"""bpt: bi-layered parallel training of CNNs (after BPT-CNN, Chen et al., IEEE TPDS 2019).

`bpt` holds the parts without Redis or Celery, by concern: bpt.data (data sets and a job's
preparation), bpt.model (networks), bpt.train (local training and the merge rules),
bpt.plan (partitioning, IDPA, simulator, emulator), bpt.job (spec, state machine,
reconciler decisions: pure, no torch); bpt.errors and bpt.settings are shared by all.
`bpt.broker` talks to Redis, `bpt.workers` to Celery, `bpt.cli` to the terminal.
"""

from . import _moved

__version__ = "0.1.0"

_moved.install()  # bpt.emulator, bpt.datasets, ... : the names before issue 27, deprecated


def __getattr__(name: str):
    return _moved.attribute(name)
