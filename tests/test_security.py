"""Mutual TLS on every control channel: certificates from `dinet certs`, and every RPC of the collector and the
node agent called with no credentials, a certificate from another CA, an expired certificate, a valid
certificate of another identity, a wrong token and (the collector) a replayed sequence number: each refused
with the right gRPC status, the refusals the server can see counted by reason; the valid call accepted.
(Refusals in the TLS handshake itself, no certificate, another CA, expired, never reach the server's Python
code: gRPC's Python server offers no hook there, so they show as UNAVAILABLE at the client, uncounted.)"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dinet import proto
from dinet.creds import Identity, init_ca, issue, read_token, same_token
from dinet.errors import ConfigError, UnknownServiceError
from dinet.model import ServiceKey
from dinet.policy.scores import Level0
from dinet.services.collect import Agent, AgentAuth, Collector, CollectorServer

SVC = ServiceKey.parse("10.97.0.1:443/tcp")


# ---- certificates ---------------------------------------------------------------------------------------
def test_dinet_certs_makes_a_ca_and_identities_with_private_keys(certs) -> None:
    for key in (certs.dir / "ca.key", certs.dir / "controller.key", certs.dir / "edge.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    ident = certs.identity("edge")
    assert (
        ident.name == "edge" and b"BEGIN CERTIFICATE" in ident.cert and ident.ca == (certs.dir / "ca.crt").read_bytes()
    )


def test_bad_credential_files_give_one_clear_error(tmp_path: Path, certs) -> None:
    with pytest.raises(ConfigError, match=r"the key .*nobody.key is missing"):
        Identity.load(certs.dir, "nobody")
    d = tmp_path / "c"
    init_ca(d)
    with pytest.raises(ConfigError, match="already holds a CA"):
        init_ca(d)
    issue(d, "a")
    issue(d, "b")
    (d / "a.key").write_bytes((d / "b.key").read_bytes())  # a key that is not the certificate's
    with pytest.raises(ConfigError, match=r"a.key does not match .*a.crt"):
        Identity.load(d, "a")
    (d / "b.crt").write_bytes((certs.dir / "edge.crt").read_bytes())  # another identity's pair
    (d / "b.key").write_bytes((certs.dir / "edge.key").read_bytes())
    with pytest.raises(ConfigError, match="is 'edge''s certificate, not 'b''s"):
        Identity.load(d, "b")
    issue(d, "c")
    (d / "ca.crt").write_bytes((certs.other / "ca.crt").read_bytes())
    with pytest.raises(ConfigError, match="not signed by"):
        Identity.load(d, "c")
    with pytest.raises(ConfigError, match="an identity is"):
        issue(certs.dir, "no spaces")
    (d / "c.key").chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ConfigError, match="cannot be read"):
            Identity.load(d, "c")


def test_the_ca_and_an_identity_are_never_replaced_silently_and_an_open_key_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    d = tmp_path / "c"
    init_ca(d)
    ca_key = (d / "ca.key").read_bytes()
    with pytest.raises(ConfigError, match="'ca' names the CA's own files"):
        issue(d, "ca")
    assert (d / "ca.key").read_bytes() == ca_key
    issue(d, "edge")
    key = (d / "edge.key").read_bytes()
    with pytest.raises(ConfigError, match="already holds edge's key or certificate: --force"):
        issue(d, "edge")
    assert (d / "edge.key").read_bytes() == key
    cli = [sys.executable, "-m", "dinet.cli", "certs", "issue", "edge", "--dir", str(d)]
    refused = subprocess.run(cli, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "--force" in refused.stderr
    assert (d / "edge.key").read_bytes() == key
    assert subprocess.run([*cli, "--force"], capture_output=True).returncode == 0
    assert (d / "edge.key").read_bytes() != key and Identity.load(d, "edge").name == "edge"
    (d / "edge.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"edge.key is readable by others \(mode 644\)"):
        Identity.load(d, "edge")


def test_tokens_come_from_a_file_or_the_environment_and_compare_in_constant_time(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "t"
    f.write_text("s3cret\nignored\n")
    assert read_token(str(f)) == "s3cret"
    monkeypatch.setenv("DINET_TOKEN", "from-env")
    assert read_token(None) == "from-env"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_token(str(tmp_path / "empty"))
    assert same_token("abc", "abc") and not same_token("abc", "abd") and not same_token("", "abc")


# ---- the collector --------------------------------------------------------------------------------------
@pytest.fixture
def collector(certs) -> Iterator[tuple[Collector, str]]:
    col = Collector({"edge": AgentAuth(frozenset({(SVC, 1)}), "edge-token")}, max_rate=1e9)
    with CollectorServer(col, identity=certs.identity("collector")) as srv:
        yield col, srv.address


def _send(agent: Agent, rpc: str, seq: int | None = None) -> Any:
    r = agent.report(str(SVC), 1, Level0(cpu_load=0.2))
    if seq is not None:
        r.seq = seq
    return agent.send([r]) if rpc == "Stream" else agent.send_batches([[r]])


@pytest.mark.parametrize("rpc", ["Stream", "StreamBatches"])
def test_every_collector_rpc_refuses_whom_it_must(collector, certs, rpc: str) -> None:
    col, address = collector
    cases = [
        ("no credentials", Agent(address, "edge-token"), grpc.StatusCode.UNAVAILABLE, None),
        (
            "another CA",
            Agent(address, "edge-token", certs.identity("controller", certs.other)),
            grpc.StatusCode.UNAVAILABLE,
            None,
        ),
        (
            "expired",
            Agent(address, "edge-token", certs.identity("controller", certs.expired)),
            grpc.StatusCode.UNAVAILABLE,
            None,
        ),
        (
            "another identity",
            Agent(address, "edge-token", certs.identity("intruder")),
            grpc.StatusCode.PERMISSION_DENIED,
            "identity",
        ),
        ("wrong token", Agent(address, "nope", certs.identity("edge")), grpc.StatusCode.UNAUTHENTICATED, "token"),
        ("no token", Agent(address, "", certs.identity("edge")), grpc.StatusCode.UNAUTHENTICATED, "token"),
        (
            "a server that is not the collector",
            Agent(address, "edge-token", certs.identity("edge"), server="controller"),
            grpc.StatusCode.UNAVAILABLE,
            None,
        ),
    ]
    for what, agent, code, reason in cases:
        before = dict(col.rejected)
        with pytest.raises(grpc.RpcError) as e:
            _send(agent, rpc)
        assert e.value.code() == code, f"{what}: {e.value.code()} {e.value.details()}"
        if reason:
            assert col.rejected[reason] == before.get(reason, 0) + 1, what
        agent.close()
    assert col.accepted == 0
    ok = Agent(address, "edge-token", certs.identity("edge"))
    assert _send(ok, rpc).accepted == 1 and col.accepted == 1
    replay = _send(ok, rpc, seq=ok.seq)  # the same sequence number again
    assert replay.rejected == 1 and col.rejected["sequence"] == 1 and col.accepted == 1
    ok.close()


def test_sequence_and_rate_are_kept_per_authenticated_identity(certs) -> None:
    """Two agents with their own identities: one's sequence numbers or rate never refuse the other's."""
    col = Collector({"edge": AgentAuth(frozenset({(SVC, 1)})), "cloud": AgentAuth(frozenset({(SVC, 2)}))}, max_rate=5)
    with CollectorServer(col, identity=certs.identity("collector")) as srv:
        edge, cloud = (
            Agent(srv.address, identity=certs.identity("edge")),
            Agent(srv.address, identity=certs.identity("cloud")),
        )
        edge.seq = 1000
        assert edge.send([edge.report(str(SVC), 1, Level0()) for _ in range(5)]).accepted == 5
        assert cloud.send([cloud.report(str(SVC), 2, Level0())]).accepted == 1  # seq 1: its own numbering
        assert edge.send([edge.report(str(SVC), 1, Level0())]).rejected == 1  # the sixth in a second: edge's
        assert col.rejected == {"rate": 1}
        edge.close()
        cloud.close()


def test_agents_sharing_an_identity_never_lock_each_other_out(certs) -> None:
    """A pool's instances share one identity: the agent started later is ahead in sequence, yet the earlier
    one's reports are still taken (each agent process is a session of its own); a replay within a session is
    refused, and a report with the largest sequence locks out only its own session."""
    col = Collector({"edge": AgentAuth(frozenset({(SVC, 1), (SVC, 2)}))})
    with CollectorServer(col, identity=certs.identity("collector")) as srv:
        early = Agent(srv.address, identity=certs.identity("edge"))
        late = Agent(srv.address, identity=certs.identity("edge"))
        late.seq = early.seq + 1_000_000  # started a second later
        for _ in range(3):
            assert late.send([late.report(str(SVC), 2, Level0())]).accepted == 1
            assert early.send([early.report(str(SVC), 1, Level0())]).accepted == 1
        again = early.send([early.report(str(SVC), 1, Level0())]).accepted
        early.seq -= 1  # a replay of the report just sent, in the same session
        replayed = early.send([early.report(str(SVC), 1, Level0())])
        assert again == 1 and replayed.rejected == 1 and "is not after" in replayed.last_error
        late.seq = 2**64 - 2  # the largest sequence there is
        assert late.send([late.report(str(SVC), 2, Level0())]).accepted == 1
        early.seq += 1
        assert early.send([early.report(str(SVC), 1, Level0())]).accepted == 1  # not locked out by it
        restarted = Agent(srv.address, identity=certs.identity("edge"))  # a new process: a new session
        assert restarted.send([restarted.report(str(SVC), 2, Level0())]).accepted == 1
        for a in (early, late, restarted):
            a.close()
    assert col.rejected == {"sequence": 1}


def test_a_server_without_credentials_refuses_to_start_unless_insecure() -> None:
    col = Collector({})
    with pytest.raises(ConfigError, match="no credentials.*--insecure"):
        CollectorServer(col)
    with CollectorServer(col, insecure=True) as srv:
        assert srv.insecure


# ---- the node agent -------------------------------------------------------------------------------------
class RefusingSteer:
    """A node with no services: a call that gets through authentication ends in NOT_FOUND."""

    def __getattr__(self, name: str) -> Any:
        def call(*a: Any, **k: Any) -> Any:
            raise UnknownServiceError("no service")

        return call


def _requests(pb: Any) -> dict[str, Any]:
    """Every RPC of the NodeAgent service, with a request of its input type."""
    svc = pb.DESCRIPTOR.services_by_name["NodeAgent"]
    out = {}
    for m in svc.methods:
        req = getattr(pb, m.input_type.name)()
        if hasattr(req, "service"):
            req.service = str(SVC)
        if m.input_type.name == "BfirEntry":
            req.dst = "10.200.0.1"
        out[m.name] = req
    return out


def test_every_node_agent_rpc_refuses_whom_it_must(certs) -> None:
    from dinet.services.agent import AgentServer, AgentService

    pb, pb_grpc = proto.agent()
    service = AgentService(RefusingSteer(), None, token="ctl", controllers=frozenset({"controller"}))
    with AgentServer(service, identity=certs.identity("agent")) as srv:
        plain = grpc.insecure_channel(srv.address)
        channels = {
            "no credentials": (plain, "ctl", grpc.StatusCode.UNAVAILABLE, None),
            "another CA": (
                certs.identity("controller", certs.other).channel(srv.address, "agent"),
                "ctl",
                grpc.StatusCode.UNAVAILABLE,
                None,
            ),
            "expired": (
                certs.identity("controller", certs.expired).channel(srv.address, "agent"),
                "ctl",
                grpc.StatusCode.UNAVAILABLE,
                None,
            ),
            "another identity": (
                certs.identity("intruder").channel(srv.address, "agent"),
                "ctl",
                grpc.StatusCode.PERMISSION_DENIED,
                "identity",
            ),
            "wrong token": (
                certs.identity("controller").channel(srv.address, "agent"),
                "nope",
                grpc.StatusCode.UNAUTHENTICATED,
                "token",
            ),
            "valid": (certs.identity("controller").channel(srv.address, "agent"), "ctl", None, None),
        }
        requests = _requests(pb)
        assert len(requests) >= 11  # every RPC the proto declares
        for rpc, req in requests.items():
            for what, (channel, token, code, reason) in channels.items():
                before = service.refused[reason] if reason else 0
                stub = pb_grpc.NodeAgentStub(channel)
                try:
                    getattr(stub, rpc)(req, metadata=[("authorization", f"Bearer {token}")], timeout=5)
                    got = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    got = e.code()
                if code is None:  # through authentication: the node's own answer
                    assert got not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.PERMISSION_DENIED,
                    ), f"{rpc} {what}: {got}"
                else:
                    assert got == code, f"{rpc} {what}: {got}"
                if reason:
                    assert service.refused[reason] == before + 1, f"{rpc} {what}: not counted"
        for ch, *_ in channels.values():
            ch.close()


def test_a_controller_without_the_servers_identity_is_refused_a_tls_channel(certs) -> None:
    from dinet.targets.remote import RemoteNode

    with pytest.raises(ConfigError, match="identity .* is needed for TLS"):
        RemoteNode("127.0.0.1:1", identity=certs.identity("controller"))


# ---- revocation -----------------------------------------------------------------------------------------
class OpenStream:
    """A report stream the test feeds one report at a time (it stays open until ended or closed by the server)."""

    def __init__(self, agent: Agent):
        import queue

        self.agent, self.q = agent, queue.Queue()  # type: ignore[var-annotated]
        self.call = agent.stub.Stream.future(iter(self.q.get, None), metadata=agent._md(), timeout=30)

    def send(self, iid: int = 1) -> None:
        self.q.put(self.agent.report(str(SVC), iid, Level0(cpu_load=0.1)))

    def outcome(self) -> grpc.StatusCode:
        self.q.put(None)
        try:
            self.call.result(timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


@pytest.fixture
def own_ca(tmp_path: Path) -> Path:
    """A CA of the test's own (revocations must not leak into the session's shared certificates)."""
    d = tmp_path / "ca"
    init_ca(d)
    for name in ("collector", "controller", "agent", "edge", "cloud"):
        issue(d, name)
    return d


def _taken(col: Collector) -> Any:
    import threading

    ev = threading.Event()
    col.listeners.append(lambda _svc: ev.set())
    return ev


def test_a_revoked_certificate_is_refused_and_its_open_streams_are_closed(own_ca: Path) -> None:
    """`dinet certs revoke edge`: edge's next call is refused (PERMISSION_DENIED, counted), the stream it holds
    open is closed at its next report, and an idle one at the next sweep; cloud, not revoked, goes on."""
    import subprocess
    import sys

    ident = Identity.load(own_ca, "collector")
    auth = {"edge": AgentAuth(frozenset({(SVC, 1)})), "cloud": AgentAuth(frozenset({(SVC, 2)}))}
    col = Collector(auth, max_rate=1e9, revocations=ident.revocations())
    col.revocations.every = 0  # type: ignore[union-attr]  # re-read at every check (the default: each second)
    with CollectorServer(col, identity=ident) as srv:
        edge = Agent(srv.address, identity=Identity.load(own_ca, "edge"))
        cloud = Agent(srv.address, identity=Identity.load(own_ca, "cloud"))
        taken = _taken(col)
        busy, idle = OpenStream(edge), OpenStream(edge)
        busy.send()
        assert taken.wait(10) and col.accepted == 1
        out = subprocess.run(
            [sys.executable, "-m", "dinet.cli", "certs", "revoke", "edge", "--dir", str(own_ca)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
        busy.send()  # the open stream's next report: refused, and the stream with it
        assert busy.outcome() == grpc.StatusCode.PERMISSION_DENIED
        assert col.sweep() == 1  # the idle one
        assert idle.outcome() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.RpcError) as e:
            edge.send([edge.report(str(SVC), 1, Level0())])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked" in (e.value.details() or "")
        assert col.accepted == 1 and col.rejected["revoked"] == 1 and col.rejected["closed"] == 2
        assert cloud.send([cloud.report(str(SVC), 2, Level0())]).accepted == 1
        for a in (edge, cloud):
            a.close()


def test_a_bad_revocation_list_is_refused_at_the_start_and_never_lets_a_revoked_certificate_back(
    own_ca: Path, tmp_path: Path
) -> None:
    from dinet.creds import revoke

    other = tmp_path / "other"
    init_ca(other)
    issue(other, "edge")
    (own_ca / "crl.pem").write_bytes(revoke(other, "edge").read_bytes())  # signed by another CA
    with pytest.raises(ConfigError, match="crl.pem is not signed by the project CA"):
        Identity.load(own_ca, "collector").revocations()
    (own_ca / "crl.pem").unlink()
    revs = Identity.load(own_ca, "collector").revocations()
    revs.every = 0
    edge_serial = _serial(own_ca / "edge.crt")
    assert not revs.revoked(edge_serial)
    revoke(own_ca, "edge")
    revoke(own_ca, "edge")  # twice: one entry
    assert revs.revoked(edge_serial) and len(revs.serials) == 1
    revoke(own_ca, "cloud")  # the entries already there are kept
    assert revs.revoked(edge_serial) and revs.revoked(_serial(own_ca / "cloud.crt"))
    (own_ca / "crl.pem").write_text("garbage\n")  # a broken file while running: the last good list holds
    assert revs.revoked(edge_serial) and not revs.revoked(None)
    with pytest.raises(ConfigError, match="not a PEM CRL"):
        Identity.load(own_ca, "collector").revocations()


def _serial(path: Path) -> int:
    from cryptography import x509

    return int(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)


def test_a_removed_identitys_open_streams_are_closed(own_ca: Path) -> None:
    """A new intent that no longer names edge (or changes its token) closes edge's open streams at once, busy
    or idle; edge's new calls with the old token are refused."""
    col = Collector({"edge": AgentAuth(frozenset({(SVC, 1)}), "t1")}, max_rate=1e9)
    with CollectorServer(col, identity=Identity.load(own_ca, "collector")) as srv:
        edge = Agent(srv.address, "t1", identity=Identity.load(own_ca, "edge"))
        taken = _taken(col)
        busy, idle = OpenStream(edge), OpenStream(edge)
        busy.send()
        assert taken.wait(10)
        col.set_agents({"edge": AgentAuth(frozenset({(SVC, 1)}), "t2")})  # its token changed
        assert idle.outcome() == busy.outcome() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.RpcError) as e:
            edge.send([edge.report(str(SVC), 1, Level0())])
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        new = Agent(srv.address, "t2", identity=Identity.load(own_ca, "edge"))
        again = OpenStream(new)
        taken.clear()
        again.send()
        assert taken.wait(10)
        col.set_agents({})  # edge removed
        assert again.outcome() == grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.RpcError) as e:
            new.send([new.report(str(SVC), 1, Level0())])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert col.rejected["closed"] == 3
        edge.close()
        new.close()


def test_a_node_agent_refuses_a_revoked_controller(own_ca: Path) -> None:
    from dinet.creds import revoke
    from dinet.services.agent import AgentServer, AgentService

    pb, pb_grpc = proto.agent()
    ident = Identity.load(own_ca, "agent")
    service = AgentService(
        RefusingSteer(), None, controllers=frozenset({"controller"}), revocations=ident.revocations()
    )
    service.revocations.every = 0  # type: ignore[union-attr]
    with AgentServer(service, identity=ident) as srv:
        ch = Identity.load(own_ca, "controller").channel(srv.address, "agent")
        stub = pb_grpc.NodeAgentStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.GetService(pb.ServiceRef(service=str(SVC)), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND  # through: the node's own answer
        revoke(own_ca, "controller")
        with pytest.raises(grpc.RpcError) as e:
            stub.GetService(pb.ServiceRef(service=str(SVC)), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and service.refused["revoked"] == 1
        ch.close()


DISTRIBUTED = """
tls: {{dir: {dir}}}
mode: distributed
ingress:
  - {{target: agent, name: a, address: "127.0.0.1:1", identity: agent,
     decider: {{collector: {{listen: "127.0.0.1:1"}}{ida}}}}}
  - {{target: agent, name: b, address: "127.0.0.1:2", identity: agent,
     decider: {{collector: {{listen: "127.0.0.1:2"}}{idb}}}}}
services: []
"""


def test_in_mode_distributed_each_decider_drives_only_the_node_agents_that_name_it(
    own_ca: Path, tmp_path: Path
) -> None:
    """With tls, deciders that share a certificate are refused (any one could drive every node agent); each
    decider runs as its own identity, and a node agent started `--controller decider-a` refuses decider-b."""
    from dinet.services.agent import AgentServer, AgentService
    from dinet.services.intent import load
    from dinet.services.run import credentials, deciding

    for name in ("decider-a", "decider-b"):
        issue(own_ca, name)
    path = tmp_path / "d.yaml"
    path.write_text(DISTRIBUTED.format(dir=own_ca, ida="", idb=""))
    with pytest.raises(ConfigError, match="each decider needs its own `identity`"):
        load(path)
    path.write_text(DISTRIBUTED.format(dir=own_ca, ida=", identity: decider-a", idb=", identity: decider-a"))
    with pytest.raises(ConfigError, match="each decider needs its own `identity`"):
        load(path)
    path.write_text(DISTRIBUTED.format(dir=own_ca, ida=", identity: decider-a", idb=", identity: decider-b"))
    ids = {}
    for node in ("a", "b"):
        cfg = load(path)
        _, mine = deciding(cfg, node)
        assert cfg.tls_name == "controller"  # what the file says stays as it says
        ids[node] = credentials(mine, insecure=False)
    assert {n: i.name for n, i in ids.items() if i} == {"a": "decider-a", "b": "decider-b"}
    pb, pb_grpc = proto.agent()
    service = AgentService(RefusingSteer(), None, controllers=frozenset({"decider-a"}))
    with AgentServer(service, identity=Identity.load(own_ca, "agent")) as srv:
        got = {}
        for node, ident in ids.items():
            assert ident is not None
            ch = ident.channel(srv.address, "agent")
            try:
                pb_grpc.NodeAgentStub(ch).GetService(pb.ServiceRef(service=str(SVC)), timeout=5)
            except grpc.RpcError as e:
                got[node] = e.code()
            ch.close()
    assert got == {"a": grpc.StatusCode.NOT_FOUND, "b": grpc.StatusCode.PERMISSION_DENIED}
    assert service.refused == {"identity": 1}


def test_https_credentials_that_cannot_work_are_one_clear_error(own_ca: Path) -> None:
    from dinet.creds import client_tls, server_tls

    assert server_tls(own_ca / "edge.crt", own_ca / "edge.key") is not None
    with pytest.raises(ConfigError, match="no certificate and key of one pair"):
        server_tls(own_ca / "edge.crt", own_ca / "cloud.key")
    with pytest.raises(ConfigError, match="the key .*missing.key is missing"):
        server_tls(own_ca / "edge.crt", own_ca / "missing.key")
    os.chmod(own_ca / "cloud.key", 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        server_tls(own_ca / "cloud.crt", own_ca / "cloud.key")
    with pytest.raises(ConfigError, match="the CA certificate .*nope.crt is missing"):
        client_tls(own_ca / "nope.crt")
    (own_ca / "junk.crt").write_text("junk\n")
    with pytest.raises(ConfigError, match="holds no CA certificate"):
        client_tls(own_ca / "junk.crt")
