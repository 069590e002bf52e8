"""Generates the Python stubs of protos/search/v1 into protos/gen.

Run `make protos` after changing a .proto file; tests/test_protos.py regenerates into a temporary folder and
fails when the committed stubs differ.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
GEN_ROOT = PROTO_ROOT / "gen"
API_DIR = Path("search") / "v1"


def generate(out_dir: Path) -> list[Path]:
    """Compiles every .proto under protos/search/v1 into out_dir; returns the files written."""
    protos = sorted((PROTO_ROOT / API_DIR).glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {PROTO_ROOT / API_DIR}")
    well_known = resources.files("grpc_tools") / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see its messages above")
    for package in (out_dir / "search", out_dir / API_DIR):
        (package / "__init__.py").write_text('"""Generated from protos/; do not edit."""\n')
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=GEN_ROOT, help="output root (default: protos/gen)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        target = args.out / "search"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(tmp) / "search", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
