"""The real DVID segmentation samples used by the tests and benchmarks of a source checkout."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["SAMPLE_VOLUMES", "labels_testdata", "sample_path", "sample_volume"]

#: 64³ uint64 label volumes (gzip of little-endian z, y, x voxels) in ``labels_testdata()``.
SAMPLE_VOLUMES = (
    "fib19-64x64x64-sample1",
    "fib19-64x64x64-sample2",
    "cx-64x64x64-sample1",
    "cx-64x64x64-sample2",
)


def labels_testdata() -> Path:
    """The folder of label test vectors: ``$DVID_STORE_TESTDATA``, else ``shared/testdata/labels``
    beside the checkout this package was imported from."""
    env = os.environ.get("DVID_STORE_TESTDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "testdata" / "labels"


def sample_path(filename: str) -> Path:
    """Path of one test vector file, with a clear error when it is missing."""
    path = labels_testdata() / filename
    if not path.exists():
        raise FileNotFoundError(f"test vector {path} is missing: set DVID_STORE_TESTDATA to shared/testdata/labels")
    return path


def sample_volume(name: str) -> np.ndarray:
    """One of :data:`SAMPLE_VOLUMES` as a read-only ``(64, 64, 64)`` uint64 array."""
    raw = gzip.decompress(sample_path(f"{name}.dat.gz").read_bytes())
    return np.frombuffer(raw, dtype="<u8").reshape(64, 64, 64)
