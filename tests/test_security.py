"""TLS, mutual TLS and bearer tokens against a real server, with
certificates made here (a throwaway CA). Path confinement of server_path is
tested in test_server.py."""
from __future__ import annotations

import datetime
import ipaddress
import secrets

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagesieve import Client
from imagesieve.client import make_channel
from imagesieve.local_server import LocalServer
from imagesieve.v1 import collections_pb2, collections_pb2_grpc, common_pb2

RW, RO = "rw-" + secrets.token_hex(16), "ro-" + secrets.token_hex(16)


# -- certificates ---------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    out = {}

    def ca(name):
        key = ec.generate_private_key(ec.SECP256R1())
        return key, _cert(name, key, _name(name), key, ca=True)

    def leaf(prefix, ca_key, ca_cert, **kw):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(prefix, key, ca_cert.subject, ca_key, **kw)
        (d / f"{prefix}.key").write_bytes(_pem_key(key))
        (d / f"{prefix}.crt").write_bytes(_pem_cert(cert))
        out[prefix] = (str(d / f"{prefix}.crt"), str(d / f"{prefix}.key"))

    ca_key, ca_cert = ca("imagesieve test CA")
    (d / "ca.crt").write_bytes(_pem_cert(ca_cert))
    out["ca"] = str(d / "ca.crt")
    leaf("server", ca_key, ca_cert, server=True)
    leaf("client", ca_key, ca_cert)
    rogue_key, rogue_cert = ca("rogue CA")
    leaf("rogue-client", rogue_key, rogue_cert)
    tokens = d / "tokens.txt"
    tokens.write_text(f"# token role name\n{RW} rw ingest-job\n\n{RO} ro dashboard\n")
    out["tokens"] = str(tokens)
    return out


@pytest.fixture(scope="module")
def tls_server(manifest_path, pki):
    cert, key = pki["server"]
    with LocalServer(["--tls-cert", cert, "--tls-key", key, "--tokens-file", pki["tokens"]],
                     model=str(manifest_path)) as srv:
        yield srv


@pytest.fixture(scope="module")
def mtls_server(manifest_path, pki):
    cert, key = pki["server"]
    # Tokens from the environment this time (never a flag).
    with LocalServer(["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", pki["ca"]],
                     model=str(manifest_path), env={"IMAGESIEVE_TOKENS": f"{RW} rw env-writer"}) as srv:
        yield srv


def _stats(srv, pki, name):
    with Client(srv.address, tls_ca=pki["ca"], token=RW, timeout=10) as c:
        return c.collection_stats(name).num_images


# -- TLS --------------------------------------------------------------------------
def test_tls_with_token_embeds_and_health_is_open(tls_server, pki, photos):
    with Client(tls_server.address, tls_ca=pki["ca"], token=RW, timeout=30) as c:
        res = c.embed([d for d, _, _ in photos[:3]])
        assert res.ok.all() and res.vectors.shape == (3, 1024)
    # The health check needs TLS but no token.
    with make_channel(tls_server.address, tls_ca=pki["ca"]) as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_client_cannot_talk_to_tls_server(tls_server):
    with Client(tls_server.address, token=RW, timeout=5) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.model_info()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_that_does_not_trust_the_server_ca_fails(tls_server, pki):
    rogue_ca = open(pki["rogue-client"][0], "rb").read()   # any other certificate as trust root
    with Client(tls_server.address, tls_ca=rogue_ca, token=RW, timeout=5) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.model_info()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


# -- tokens -----------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "not-a-valid-token-at-all", RO + "x"])
def test_missing_or_wrong_token_is_unauthenticated_and_adds_nothing(tls_server, pki, photos, token):
    with Client(tls_server.address, tls_ca=pki["ca"], token=RW, timeout=10) as admin:
        admin.create_collection("guarded", exist_ok=True)
    with Client(tls_server.address, tls_ca=pki["ca"], token=token, timeout=10) as c:
        for call in (lambda: c.model_info(),
                     lambda: list(c.add("guarded", [photos[0][0]], keys=["x"])),
                     lambda: list(c.check("guarded", [photos[1][0]], add_if_unique=True)),
                     lambda: c.embed_batch([photos[0][0]]),
                     lambda: c.create_collection("sneaky")):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value.details()
            assert "token" in e.value.details()
    assert _stats(tls_server, pki, "guarded") == 0
    with Client(tls_server.address, tls_ca=pki["ca"], token=RW, timeout=10) as admin:
        assert "sneaky" not in [ci.name for ci in admin.list_collections()]


def test_raw_metadata_bearer_scheme(tls_server, pki):
    with make_channel(tls_server.address, tls_ca=pki["ca"]) as ch:
        stub = collections_pb2_grpc.CollectionServiceStub(ch)
        req = collections_pb2.ListCollectionsRequest()
        stub.ListCollections(req, metadata=[("authorization", f"Bearer {RO}")], timeout=10)
        for md in ([("authorization", RO)], [("authorization", f"Basic {RO}")], [("x-token", RO)]):
            with pytest.raises(grpc.RpcError) as e:
                stub.ListCollections(req, metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_read_only_token_reads_but_cannot_write(tls_server, pki, photos):
    with Client(tls_server.address, tls_ca=pki["ca"], token=RW, timeout=30) as admin:
        admin.create_collection("ro-test", exist_ok=True)
        assert all(r.added for r in admin.add("ro-test", [photos[0][0]], keys=["seed"]))
    with Client(tls_server.address, tls_ca=pki["ca"], token=RO, timeout=30) as c:
        # Reading is allowed.
        assert c.embed([photos[1][0]]).ok.all()
        assert c.model_info().dim == 1024
        assert "ro-test" in [ci.name for ci in c.list_collections()]
        assert c.collection_stats("ro-test").num_images == 1
        (v,) = list(c.check("ro-test", [photos[0][0]]))
        assert v.verdict == "EXACT_DUPLICATE" and not v.added
        assert c.find_duplicates("ro-test").num_images == 1
        # Writing is not.
        writes = {"AddImages": lambda: list(c.add("ro-test", [photos[2][0]], keys=["new"])),
                  "CheckDuplicates add_if_unique": lambda: list(c.check("ro-test", [photos[3][0]],
                                                                        add_if_unique=True)),
                  "CreateCollection": lambda: c.create_collection("ro-made"),
                  "RemoveImages": lambda: c.remove("ro-test", ["seed"]),
                  "SnapshotCollection": lambda: c.snapshot_collection("ro-test"),
                  "DropCollection": lambda: c.drop_collection("ro-test")}
        for what, call in writes.items():
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, what
            assert "read-write" in e.value.details(), what
    assert _stats(tls_server, pki, "ro-test") == 1
    with Client(tls_server.address, tls_ca=pki["ca"], token=RW, timeout=10) as admin:
        names = [ci.name for ci in admin.list_collections()]
        assert "ro-test" in names and "ro-made" not in names


def test_tokens_never_reach_the_log(tls_server):
    text = "\n".join(tls_server.log)
    assert RW not in text and RO not in text
    assert "2 token(s) required" in text


# -- mutual TLS -------------------------------------------------------------------
def test_mtls_accepts_a_client_certificate_from_the_ca(mtls_server, pki, photos):
    cert, key = pki["client"]
    with Client(mtls_server.address, tls_ca=pki["ca"], tls_cert=cert, tls_key=key, token=RW, timeout=30) as c:
        assert c.embed([photos[0][0]]).ok.all()


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA"])
def test_mtls_rejects_clients_without_a_trusted_certificate(mtls_server, pki, who):
    kw = {}
    if who != "no certificate":
        kw = dict(tls_cert=pki["rogue-client"][0], tls_key=pki["rogue-client"][1])
    with Client(mtls_server.address, tls_ca=pki["ca"], token=RW, timeout=5, **kw) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.model_info()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_still_requires_a_token(mtls_server, pki):
    cert, key = pki["client"]
    with Client(mtls_server.address, tls_ca=pki["ca"], tls_cert=cert, tls_key=key, timeout=10) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.model_info()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cli_health_and_info_with_tls_and_token(mtls_server, pki, monkeypatch, capsys):
    from imagesieve.cli import main
    cert, key = pki["client"]
    tls = ["--tls-ca", pki["ca"], "--tls-cert", cert, "--tls-key", key]
    assert main(["health", "--server", mtls_server.address, *tls]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    monkeypatch.setenv("IMAGESIEVE_TOKEN", RW)
    assert main(["info", "--server", mtls_server.address, *tls]) == 0
    assert '"dim": 1024' in capsys.readouterr().out
    monkeypatch.delenv("IMAGESIEVE_TOKEN")
    assert main(["info", "--server", mtls_server.address, "--connect-timeout", "5", *tls]) == 1


def test_async_client_with_tls_and_token(tls_server, pki, photos):
    import asyncio
    from imagesieve import AsyncClient

    async def go():
        async with AsyncClient(tls_server.address, tls_ca=pki["ca"], token=RO, timeout=30) as c:
            res = await c.embed([photos[0][0], photos[1][0]])
            assert res.ok.all()
        async with AsyncClient(tls_server.address, tls_ca=pki["ca"], timeout=10) as c:
            with pytest.raises(grpc.RpcError) as e:
                await c.model_info()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    asyncio.run(go())


def test_plaintext_async_client_sends_token(manifest_path, photos):
    """Tokens without TLS (e.g. behind a TLS-terminating proxy): both clients
    send them through call interceptors."""
    import asyncio
    from imagesieve import AsyncClient
    with LocalServer([], model=str(manifest_path), env={"IMAGESIEVE_TOKENS": f"{RW} rw proxy"}) as srv:
        with Client(srv.address, token=RW, timeout=30) as c:
            assert c.embed([photos[0][0]]).ok.all()
        with Client(srv.address, timeout=10) as c:
            with pytest.raises(grpc.RpcError) as e:
                c.model_info()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED

        async def go():
            async with AsyncClient(srv.address, token=RW, timeout=30) as c:
                assert (await c.embed([photos[1][0]])).ok.all()
        asyncio.run(go())


def test_bad_tokens_file_refuses_to_start_without_echoing_it(manifest_path, tmp_path):
    f = tmp_path / "tokens.txt"
    f.write_text("s3cret-token-value-123456 admin\n")
    srv = LocalServer(["--tokens-file", str(f)], model=str(manifest_path), startup_timeout=60)
    with pytest.raises(RuntimeError) as e:
        srv.start()
    assert "expected 'TOKEN rw|ro [NAME]'" in str(e.value)
    assert "s3cret" not in str(e.value)


def test_read_only_stream_that_turns_to_writing_is_refused_midway(tls_server, pki, photos):
    """A read-only CheckDuplicates stream whose second message asks to add:
    refused at that message, nothing added, and the server keeps serving."""
    from imagesieve.v1 import duplicates_pb2, duplicates_pb2_grpc
    with Client(tls_server.address, tls_ca=pki["ca"], token=RW, timeout=30) as admin:
        admin.create_collection("midway", exist_ok=True)
    msgs = [duplicates_pb2.CheckDuplicatesRequest(collection="midway", images=[
                common_pb2.Image(key=f"p{i}", data=photos[i][0])], add_if_unique=(i == 1)) for i in range(3)]
    with make_channel(tls_server.address, tls_ca=pki["ca"], token=RO) as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(duplicates_pb2_grpc.DuplicateServiceStub(ch).CheckDuplicates(iter(msgs), timeout=30))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _stats(tls_server, pki, "midway") == 0
    with Client(tls_server.address, tls_ca=pki["ca"], token=RO, timeout=30) as c:
        assert c.embed([photos[0][0]]).ok.all()


def test_the_read_only_rule_and_the_retries_come_from_the_contract():
    """Every method states in the .proto whether it reads or writes
    (imagesieve.v1.access); the token check and the client's retry policy
    follow those options, not lists of their own."""
    from imagesieve.channel import RETRIED_METHODS
    from imagesieve.contract import methods
    from imagesieve.v1 import (analysis_pb2, collections_pb2, common_pb2, consensus_pb2, duplicates_pb2,
                               embedding_pb2)
    from imagesieve_server.security import READ_ONLY_METHODS, WRITES_WHEN

    ms = methods()
    assert len(ms) == 16
    for mod in (analysis_pb2, collections_pb2, consensus_pb2, duplicates_pb2, embedding_pb2):
        for service in mod.DESCRIPTOR.services_by_name.values():
            for m in service.methods:                  # stated, not left to the default
                assert m.GetOptions().HasExtension(common_pb2.access), m.full_name
    assert READ_ONLY_METHODS == {p for p, m in ms.items() if m.reads}
    assert "/imagesieve.v1.CollectionService/AddImages" not in READ_ONLY_METHODS
    assert WRITES_WHEN == {"/imagesieve.v1.DuplicateService/CheckDuplicates": "add_if_unique"}
    retried = {p for p in ms for service, method in RETRIED_METHODS
               if p.startswith(f"/{service}/") and (not method or p.endswith(f"/{method}"))}
    assert retried == {p for p, m in ms.items() if m.reads and not m.writes_when}
