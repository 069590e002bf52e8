"""The embedded default corpus: the Python standard library's own documentation, in the BEIR layout.

Every public module, class and function/method of the running interpreter's standard library with a
substantial docstring becomes one document: `_id` is the qualified name ("json.dumps"), `title` the name with
its signature ("json.dumps(obj, *, skipkeys=False, ...)"), `text` the cleaned docstring. Sources are parsed
with `ast`, never imported, so building the corpus runs no library code. It needs nothing but Python, which is
why the demo uses it: a fresh offline machine can build it.

    search-corpus --out var/corpus/stdlib     # writes var/corpus/stdlib/corpus.jsonl atomically
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

from search_common.artifacts import atomic_directory
from search_common.documents import Document

logger = logging.getLogger(__name__)

MIN_DOCSTRING_CHARS = 40
SKIPPED_PARTS = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages", "ensurepip"}
)
CORPUS_FILE = "corpus.jsonl"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_name(root: Path, path: Path) -> str | None:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or any(p in SKIPPED_PARTS or p.startswith("_") for p in parts):
        return None
    if any(not p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, drop_self: bool) -> str:
    args = node.args
    if drop_self:
        if args.posonlyargs:
            args = ast.arguments(
                posonlyargs=args.posonlyargs[1:],
                args=args.args,
                vararg=args.vararg,
                kwonlyargs=args.kwonlyargs,
                kw_defaults=args.kw_defaults,
                kwarg=args.kwarg,
                defaults=args.defaults,
            )
        elif args.args:
            args = ast.arguments(
                posonlyargs=[],
                args=args.args[1:],
                vararg=args.vararg,
                kwonlyargs=args.kwonlyargs,
                kw_defaults=args.kw_defaults,
                kwarg=args.kwarg,
                defaults=args.defaults,
            )
    for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if arg is not None:
            arg.annotation = None
    try:
        return f"({ast.unparse(args)})"
    except (ValueError, TypeError, AttributeError):  # malformed or unusual defaults
        return "(...)"


def _docstring(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    raw = ast.get_docstring(node, clean=False)
    if raw is None:
        return None
    text = inspect.cleandoc(raw)
    return text if len(text) >= MIN_DOCSTRING_CHARS else None


def _documents_of(module: str, tree: ast.Module) -> Iterator[Document]:
    text = _docstring(tree)
    if text is not None:
        yield Document(module, module, text)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            text = _docstring(node)
            if text is not None:
                name = f"{module}.{node.name}"
                yield Document(name, name + _signature(node, drop_self=False), text)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            class_name = f"{module}.{node.name}"
            text = _docstring(node)
            if text is not None:
                yield Document(class_name, class_name, text)
            for member in node.body:
                if not isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                if member.name.startswith("_") and member.name != "__init__":
                    continue
                text = _docstring(member)
                if text is None:
                    continue
                static = any(
                    isinstance(d, ast.Name) and d.id == "staticmethod" for d in member.decorator_list
                )
                name = f"{class_name}.{member.name}"
                yield Document(name, name + _signature(member, drop_self=not static), text)


def iter_stdlib_documents(root: Path | None = None) -> Iterator[Document]:
    """Documents of every eligible stdlib file, in sorted path order; the first of a repeated id wins."""
    root = stdlib_root() if root is None else root
    seen: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        module = _module_name(root, path)
        if module is None:
            continue
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError) as exc:
            logger.debug("skipping %s: %s", path, exc)
            continue
        for document in _documents_of(module, tree):
            if document.doc_id not in seen:
                seen.add(document.doc_id)
                yield document


def write_corpus(
    out_dir: Path, documents: Sequence[Document] | Iterator[Document], overwrite: bool = True
) -> Path:
    """Writes `<out_dir>/corpus.jsonl` atomically (the folder appears only when complete)."""
    with (
        atomic_directory(out_dir, overwrite=overwrite) as scratch,
        (scratch / CORPUS_FILE).open("w", encoding="utf-8") as handle,
    ):
        for doc in documents:
            record = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out_dir / CORPUS_FILE


def ensure_stdlib_corpus(out_dir: Path) -> Path:
    """The corpus file under out_dir, built first if absent."""
    path = out_dir / CORPUS_FILE
    if not path.is_file():
        logger.info("building the stdlib corpus under %s", out_dir)
        write_corpus(out_dir, iter_stdlib_documents())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="search-corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write corpus.jsonl into")
    parser.add_argument("--stdlib", type=Path, default=None, help="stdlib folder (default: this Python's)")
    args = parser.parse_args(argv)
    root = args.stdlib or stdlib_root()
    if not root.is_dir():
        parser.error(f"--stdlib {root}: not a directory")
    path = write_corpus(args.out, list(iter_stdlib_documents(root)))
    count = sum(1 for _ in path.open(encoding="utf-8"))
    print(f"wrote {count} documents to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
