"""TLS and mutual TLS on every gRPC hop, with a CA and certificates the test makes itself.

A retriever server and the gateway both require client certificates; the gateway reaches the retriever
with its own client certificate. A caller with a certificate from the CA is answered; one without a
certificate, one that trusts another CA, and a plaintext one are refused at the handshake.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from search.v1 import search_service_pb2, search_service_pb2_grpc

from gateway.bootstrap import bootstrap
from gateway.clients import GrpcRetriever
from gateway.config import Settings as GatewaySettings
from gateway.config import parse_settings as parse_gateway_settings
from gateway.server import start_gateway
from retriever_service.config import Settings as RetrieverSettings
from retriever_service.server import create_server as create_retriever_server
from search_common.errors import Unavailable
from search_common.ports import Retriever
from search_common.tls import ClientTls, ServerTls
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _credentials(pki: Pki, *, with_cert: bool = True, ca: Path | None = None) -> grpc.ChannelCredentials:
    tls = ClientTls(
        ca or pki.ca, pki.client_cert if with_cert else None, pki.client_key if with_cert else None
    )
    return tls.credentials()


async def test_mutual_tls_on_every_hop(
    shards: dict[str, list[Retriever]], indexes: dict[str, Path], pki: Pki
) -> None:
    server_tls = ServerTls(pki.server_cert, pki.server_key, client_ca=pki.ca)
    retriever_settings = RetrieverSettings(index=indexes["bm25-1"] / "shard-0", port=0, tls=server_tls)
    retriever_server, retriever_port = create_retriever_server(retriever_settings, shards["bm25-1"][0])
    await retriever_server.start()
    address = f"127.0.0.1:{retriever_port}"
    settings = GatewaySettings(
        retrievers={"bm25": (address,)},
        port=0,
        tls=server_tls,
        downstream_tls=ClientTls(pki.ca, pki.client_cert, pki.client_key),
    )
    gateway = bootstrap(settings)
    try:
        bound = await start_gateway(settings, gateway)
        target = f"127.0.0.1:{bound.port}"
        request = search_service_pb2.SearchRequest(query="gzip archive", top_k=3)
        try:
            async with grpc.aio.secure_channel(target, _credentials(pki)) as channel:
                reply = await search_service_pb2_grpc.SearchServiceStub(channel).Search(request, timeout=10)
            assert len(reply.hits) == 3 and not reply.metadata.coverage.degraded

            refused = [
                grpc.aio.secure_channel(target, _credentials(pki, with_cert=False)),  # no client cert
                grpc.aio.secure_channel(target, _credentials(pki, ca=pki.other_ca)),  # wrong CA
                grpc.aio.insecure_channel(target),  # plaintext
            ]
            for channel in refused:
                async with channel:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await search_service_pb2_grpc.SearchServiceStub(channel).Search(request, timeout=5)
                    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await bound.server.stop(0)
        # The retriever refuses a gateway that shows no client certificate.
        anonymous = GrpcRetriever("bm25", 0, address, ClientTls(pki.ca))
        with pytest.raises(Unavailable):
            await anonymous.describe(timeout=5)
        await anonymous.close()
    finally:
        await gateway.close()
        await retriever_server.stop(0)


def test_tls_flags_parse_and_half_configurations_are_refused(pki: Pki) -> None:
    settings = parse_gateway_settings(
        ["--bm25", "127.0.0.1:1", "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
         "--tls-client-ca", str(pki.ca), "--tls-ca", str(pki.ca), "--tls-client-cert", str(pki.client_cert),
         "--tls-client-key", str(pki.client_key)]
    )  # fmt: skip
    assert settings.tls == ServerTls(pki.server_cert, pki.server_key, pki.ca)
    assert settings.downstream_tls == ClientTls(pki.ca, pki.client_cert, pki.client_key)
    for argv in (["--tls-cert", str(pki.server_cert)], ["--tls-client-cert", str(pki.client_cert)]):
        with pytest.raises(SystemExit):
            parse_gateway_settings(["--bm25", "127.0.0.1:1", *argv])
