"""Versioned on-disk artifacts (indexes, models): manifests, checksums and atomic publication.

An artifact is a directory holding its files and a `manifest.json`. It is written under a temporary name
beside its final path and renamed into place only when complete, so a build killed midway never leaves a
half-written artifact where a loader would find it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class ArtifactError(ValueError):
    """An artifact is missing, incomplete, corrupt or does not match what the loader expects."""


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(root: Path, exclude: frozenset[str] = frozenset({MANIFEST_NAME})) -> str:
    """One checksum over every file below root (relative names and contents), in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in exclude):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def new_version() -> str:
    """A sortable version label: UTC build time to the second."""
    return time.strftime("v%Y%m%dT%H%M%SZ", time.gmtime())


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> Path:
    path = directory / MANIFEST_NAME
    path.write_text(json.dumps(dict(manifest), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST_NAME}; not a complete artifact")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path}: manifest must be a JSON object")
    missing = [key for key in required if key not in manifest]
    if missing:
        raise ArtifactError(f"{path}: manifest lacks {', '.join(missing)}")
    return manifest


def verify_checksums(directory: Path, checksums: Mapping[str, str]) -> None:
    """Checks each named file's sha256 against the manifest's record of it."""
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{directory}: {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(f"{directory}: checksum mismatch for {name} (corrupt or replaced file)")


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a scratch directory that becomes `target` only if the block completes.

    On an exception (or a kill) the scratch directory is left under a `.tmp-` name that loaders ignore and
    the next build removes; `target` keeps whatever it held before.
    """
    target = target.resolve()
    if target.exists() and not overwrite:
        raise ArtifactError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover_retired(target)
    for stale in target.parent.glob(f".tmp-{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    scratch = target.parent / f".tmp-{target.name}-{os.getpid()}"
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _fsync_tree(scratch)
    if target.exists():
        if _exchange(scratch, target):  # one atomic step: readers see the old tree or the new, never none
            shutil.rmtree(scratch, ignore_errors=True)
            return
        # No renameat2 here: two renames. A kill between them leaves the old tree under the `-old-` name,
        # which the next build (or `_recover_retired`) puts back instead of deleting.
        retired = target.parent / f".tmp-{target.name}-old-{os.getpid()}"
        target.rename(retired)
        scratch.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        scratch.rename(target)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        logger.debug(
            "renameat2 exchange unavailable (errno %d); falling back to two renames", ctypes.get_errno()
        )
        return False
    return True


def _recover_retired(target: Path) -> None:
    """Puts back a previous version that a kill between the fallback's two renames left retired."""
    if target.exists():
        return
    retired = sorted(target.parent.glob(f".tmp-{target.name}-old-*"))
    if retired:
        logger.warning("%s: restoring the previous version from %s", target, retired[-1].name)
        retired[-1].rename(target)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def latest_version(parent: Path) -> Path:
    """The newest complete version directory (by sortable name) below parent."""
    versions = (
        sorted(
            p
            for p in parent.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
        )
        if parent.is_dir()
        else []
    )
    if not versions:
        raise ArtifactError(f"{parent}: no complete artifact version found")
    return versions[-1]


def resolve_version(path: Path) -> Path:
    """An artifact version directory itself, or the newest complete version below a root."""
    return path if (path / MANIFEST_NAME).is_file() else latest_version(path)
