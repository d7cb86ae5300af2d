"""Where binmap_tf finds shared data and caches its converted weights.

Every location can be given explicitly; otherwise an environment variable is read, and
otherwise the documented default is used:

* ``BINMAP_TF_SHARED``: the read-only shared folder (paper, data, weights notes);
  default ``../shared`` relative to the repository root.
* ``BINMAP_TF_DATA``: the benchmark data root; default ``<shared>/data``.
* ``BINMAP_TF_HOME``: cache for imported weights and binary maps; default
  ``~/.cache/binmap_tf``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # binmap_tf/
REPO_ROOT = PACKAGE_DIR.parent
ASSETS_DIR = PACKAGE_DIR / "assets"
# ``hashing=FINE_TUNED`` (``--hashing fine-tuned``): the hashing layer shipped in ASSETS_DIR after
# fine-tuning with binmap_tf.cli.train (README, "Fine-tuning the hashing layer").
FINE_TUNED = "fine-tuned"


def shared_root(path: str | os.PathLike | None = None) -> Path:
    """Return the shared folder: ``path``, else ``$BINMAP_TF_SHARED``, else ``../shared``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("BINMAP_TF_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def data_root(path: str | os.PathLike | None = None) -> Path:
    """Return the benchmark data root: ``path``, else ``$BINMAP_TF_DATA``, else ``<shared>/data``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("BINMAP_TF_DATA")
    return Path(env) if env else shared_root() / "data"


def cache_home(path: str | os.PathLike | None = None) -> Path:
    """Return the cache folder: ``path``, else ``$BINMAP_TF_HOME``, else ``~/.cache/binmap_tf``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("BINMAP_TF_HOME")
    return Path(env) if env else Path.home() / ".cache" / "binmap_tf"
