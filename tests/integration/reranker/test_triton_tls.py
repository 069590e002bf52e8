"""The reranker's hop to tritonserver over TLS and mutual TLS, with certificates the test makes itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from operations.triton_repository import assemble_model_repository
from operations.tritonserver import TritonInstallation, TritonServer, TritonTls
from reranker_service.backends.triton import TritonScorer
from reranker_service.config import parse_settings
from search_common.errors import Unavailable
from search_common.tls import ClientTls
from tests.pki import Pki, make_pki

QUERY = "what lowers blood pressure"
TEXTS = ["Beta blockers reduce blood pressure.", "The moon orbits the earth.", "Salt raises it."]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_triton(
    triton_installation: TritonInstallation,
    artifact_v1: Path,
    pki: Pki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonServer]:
    work = tmp_path_factory.mktemp("triton-tls")
    repository = assemble_model_repository(
        work / "model_repository",
        artifact_root=artifact_v1.parent,
        artifact_version=artifact_v1.name,
        intra_op_threads=1,
    )
    tls = TritonTls(
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        client=ClientTls(pki.ca, pki.client_cert, pki.client_key),
        mutual=True,
    )
    with TritonServer(
        repository, installation=triton_installation, work_dir=work / "run", grpc_tls=tls
    ) as server:
        yield server


async def test_scores_over_mutual_tls(mtls_triton: TritonServer, pki: Pki) -> None:
    scorer = TritonScorer(mtls_triton.grpc_url, tls=ClientTls(pki.ca, pki.client_cert, pki.client_key))
    try:
        await scorer.start()
        scores = await scorer.score(QUERY, TEXTS, None)
    finally:
        await scorer.close()
    assert scores.shape == (len(TEXTS),)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize(
    "describe",
    ["plaintext", "no client certificate", "another CA"],
)
async def test_refused_without_the_right_credentials(
    mtls_triton: TritonServer, pki: Pki, describe: str
) -> None:
    tls = {
        "plaintext": None,
        "no client certificate": ClientTls(pki.ca),
        "another CA": ClientTls(pki.other_ca, pki.client_cert, pki.client_key),
    }[describe]
    scorer = TritonScorer(mtls_triton.grpc_url, timeout_seconds=2.0, tls=tls)
    try:
        with pytest.raises(Unavailable):
            await scorer.start()
    finally:
        await scorer.close()


def test_reranker_flags_build_the_triton_tls(pki: Pki) -> None:
    settings = parse_settings(
        [
            "--backend=triton",
            f"--triton-tls-ca={pki.ca}",
            f"--triton-tls-client-cert={pki.client_cert}",
            f"--triton-tls-client-key={pki.client_key}",
        ],
        environ={},
    )
    assert settings.triton_tls == ClientTls(pki.ca, pki.client_cert, pki.client_key)


def test_half_a_client_certificate_is_refused(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--backend=triton", f"--triton-tls-client-cert={pki.client_cert}"], environ={})
    assert "--triton-tls-client-cert/--triton-tls-client-key need --triton-tls-ca" in capsys.readouterr().err
