"""One numba cache folder per version of the compiled Go code, so a stale cache cannot run.

numba's ``cache=True`` checks only the timestamp of the file that holds a function: a kernel
compiled against an older ``fastboard.py`` (its callees are inlined) would be loaded from the
cache after ``fastboard.py`` changed, and can crash the interpreter. Before any kernel is
defined, this points ``numba.config.CACHE_DIR`` at a folder named by a hash of the sources the
kernels are built from (``envs/go``'s compiled modules; ``agents/mcts_kernel.py`` depends only
on these and is covered by its own timestamp), under ``$NUMBA_CACHE_DIR`` if set, else next to
these sources. An unwritable folder makes numba fall back to its usual places.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba import config

_HERE = Path(__file__).parent
SOURCES = ("fastboard.py", "fastpolicy.py", "playout.py", "scoring.py")


def source_hash() -> str:
    h = hashlib.sha1()
    for name in SOURCES:
        path = _HERE / name
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def use_versioned_cache() -> str:
    base = os.environ.get("NUMBA_CACHE_DIR") or str(_HERE / "__pycache__")
    config.CACHE_DIR = os.path.join(base, f"lab-go-{source_hash()}")
    return config.CACHE_DIR


use_versioned_cache()
