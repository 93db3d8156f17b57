"""`txswitch serve` tunes the garbage collector from its settings, or leaves it alone."""

from __future__ import annotations

import gc

from switch.cli import tune_garbage_collection
from switch.config import Settings


def test_thresholds_come_from_settings_and_zero_leaves_pythons() -> None:
    # Another test on this worker may have run the simulator in-process, which freezes and tunes
    # the collector itself (terminal_sim/processes.py): start from a collector nothing froze.
    gc.unfreeze()
    before = gc.get_threshold()
    try:
        tune_garbage_collection(Settings(gc_gen0_threshold=0))
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        tune_garbage_collection(Settings(gc_gen0_threshold=12_345, gc_gen1_threshold=7, gc_gen2_threshold=3))
        assert gc.get_threshold() == (12_345, 7, 3)
        assert gc.get_freeze_count() > 0  # what start-up built is no longer scanned
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
