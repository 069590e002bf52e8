"""The embedded default corpus: parsed with ast (never imported), skips, ids, signatures, determinism."""

from __future__ import annotations

from pathlib import Path

from corpora.stdlib import iter_stdlib_documents, main
from search_common.corpus_file import load_corpus

LONG = "This docstring is long enough to count as documentation for the corpus."


def _fake_stdlib(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text(f'"""{LONG}"""\n')
    (root / "pkg" / "tool.py").write_text(
        f'''"""{LONG}"""
raise SystemExit("never imported")

def run(cmd: list[str], *, check: bool = False) -> int:
    """{LONG}"""

def _private():
    """{LONG}"""

def short():
    """Too short."""

class Runner:
    """{LONG}"""

    def start(self, timeout=1.0):
        """{LONG}"""

    @staticmethod
    def helper(x):
        """{LONG}"""

    def _hidden(self):
        """{LONG}"""
'''
    )
    for skipped in ("test/test_x.py", "idlelib/a.py", "_private_mod.py", "site-packages/lib.py"):
        path = root / skipped
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""{LONG}"""\n')
    (root / "broken.py").write_text("def (:\n")
    return root


def test_documents_from_fake_stdlib(tmp_path: Path) -> None:
    root = _fake_stdlib(tmp_path / "lib")
    docs = list(iter_stdlib_documents(root))
    assert [d.doc_id for d in docs] == [
        "pkg",
        "pkg.tool",
        "pkg.tool.run",
        "pkg.tool.Runner",
        "pkg.tool.Runner.start",
        "pkg.tool.Runner.helper",
    ]
    titles = {d.doc_id: d.title for d in docs}
    assert titles["pkg.tool.run"] == "pkg.tool.run(cmd, *, check=False)"
    assert titles["pkg.tool.Runner.start"] == "pkg.tool.Runner.start(timeout=1.0)"
    assert titles["pkg.tool.Runner.helper"] == "pkg.tool.Runner.helper(x)"
    assert all(d.text == LONG for d in docs)
    assert docs == list(iter_stdlib_documents(root))


def test_cli_writes_a_beir_corpus(tmp_path: Path) -> None:
    root = _fake_stdlib(tmp_path / "lib")
    assert main(["--out", str(tmp_path / "out"), "--stdlib", str(root)]) == 0
    corpus = load_corpus(tmp_path / "out" / "corpus.jsonl")
    assert len(corpus) == 6 and corpus[0].doc_id == "pkg"
