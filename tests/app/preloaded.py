"""A task module that remembers which process imported it (see test_cluster's preload tests).

Nothing imports it but a cluster running its task: the tests drop it from
sys.modules first, so each starts with it unimported.
"""

import os

IMPORTED_BY = os.getpid()


def importer() -> tuple[int, int]:
    """(pid of the process that imported this module, pid of the worker running this task)."""
    return IMPORTED_BY, os.getpid()
