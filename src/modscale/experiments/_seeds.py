"""Seeds of independent random streams, mixed from integers: one recipe for every experiment.

    seed = SeedSequence(words).generate_state(1, uint64)[0] >> 1     (63 bits: a valid torch / numpy seed)

numpy's SeedSequence hashes the whole word list, so seeds of different (purpose, job seed, index, ...) lists
are unrelated streams, and a job's seed for one purpose depends on its own words alone, never on which other
jobs share its stack (DESIGN section 5). Example::

    mix_seed(2, 0, 7, 3)   # stream 2 ("training rows"), split seed 0, job seed 7, chunk 3 -> an int < 2^63
"""

from __future__ import annotations

import numpy as np


def mix_seed(*words: int) -> int:
    """A 63-bit seed from non-negative integers ``words`` (numpy's SeedSequence; module docstring)."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


__all__ = ["mix_seed"]
