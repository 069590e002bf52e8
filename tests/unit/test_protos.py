"""The committed stubs under protos/gen must be exactly what the .proto files generate."""

from __future__ import annotations

import filecmp
from pathlib import Path

from search_common import protogen


def test_generated_stubs_are_current(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    committed_root = protogen.GEN_ROOT
    stale = []
    for path in fresh:
        relative = path.relative_to(tmp_path)
        committed = committed_root / relative
        if not committed.is_file() or not filecmp.cmp(path, committed, shallow=False):
            stale.append(str(relative))
    extra = sorted(
        str(p.relative_to(committed_root))
        for p in (committed_root / "search").rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not (tmp_path / p.relative_to(committed_root)).exists()
    )
    assert not stale and not extra, (
        f"protos/gen is stale (run `make protos`): changed {stale}, no longer generated {extra}"
    )


def test_api_package_follows_versioned_naming() -> None:
    from search.v1 import reranker_pb2, retriever_pb2, search_service_pb2

    for module in (reranker_pb2, retriever_pb2, search_service_pb2):
        assert module.DESCRIPTOR.package == "search.v1"
