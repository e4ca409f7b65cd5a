"""Errors a user meets: bad input, unknown names, full tables, missing interfaces, verifier refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import needs_bcc, needs_root
from dinet.errors import (
    ConfigError,
    InterfaceError,
    TableFullError,
    UnknownInstanceError,
    UnknownServiceError,
    VerifierError,
)
from dinet.model import Instance, ServiceKey


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1",
        "10.0.0.1:80",
        "10.0.0.1:0/tcp",
        "10.0.0.1:70000/tcp",
        "10.0.0.1:http/tcp",
        "10.0.0.256:80/tcp",
        "fd00::1:80/udp",
        "10.0.0.1:80/sctp",
        "",
    ],
)
def test_malformed_services_are_refused(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        ServiceKey.parse(text)
    assert str(e.value)


def test_services_parse_both_families() -> None:
    assert str(ServiceKey.parse("10.0.0.1:80/tcp")) == "10.0.0.1:80/tcp"
    assert str(ServiceKey.parse("[fd00::1]:53/UDP")) == "[fd00::1]:53/udp"


@pytest.mark.parametrize(
    "kw",
    [
        dict(instance_id=0),
        dict(weight=-1),
        dict(weight=float("nan")),
        dict(weight=1.5),
        dict(endpoint="not-an-ip"),
        dict(site_id=70000),
    ],
)
def test_malformed_instances_are_refused(kw: dict) -> None:
    args = dict(instance_id=1, endpoint="192.0.2.1", weight=1) | kw
    with pytest.raises(ConfigError):
        Instance(**args)


@pytest.fixture(scope="module")
def node(bpffs_root: Path) -> Iterator:
    from dinet.targets.base import SteerSizes
    from dinet.targets.xdp import SteeringNode

    n = SteeringNode(
        "errors", SteerSizes(max_services=2, max_instances=4, ring_size=13, affinity_entries=64), bpffs_root=bpffs_root
    )
    n.configure(src4="192.0.2.1")
    try:
        yield n
    finally:
        n.destroy()


@needs_root
@needs_bcc
def test_node_errors(node) -> None:
    a, b, c = (ServiceKey.parse(f"10.9.0.{i}:80/tcp") for i in (1, 2, 3))
    node.add_service(a)
    node.add_service(b)
    with pytest.raises(TableFullError, match="full"):
        node.add_service(c)
    with pytest.raises(UnknownServiceError, match="10.9.0.3"):
        node.set_instances(c, [Instance(1, "192.0.2.9")])
    with pytest.raises(ConfigError, match="all weights"):
        node.set_instances(a, [Instance(1, "192.0.2.9", 0), Instance(2, "192.0.2.10", 0)])
    with pytest.raises(ConfigError, match="IPv6 tunnel source"):
        node.set_instances(a, [Instance(1, "2001:db8::9")])
    with pytest.raises(TableFullError, match="at most 4"):
        node.set_instances(a, [Instance(i, "192.0.2.9") for i in range(1, 6)])
    with pytest.raises(ConfigError, match="duplicate"):
        node.set_instances(a, [Instance(1, "192.0.2.9"), Instance(1, "192.0.2.10")])
    node.set_instances(a, [Instance(1, "192.0.2.9")])
    with pytest.raises(UnknownInstanceError, match="no instance 7"):
        node.drain(a, 7)
    with pytest.raises(InterfaceError, match="no interface 'nosuch0'"):
        node.attach("nosuch0")
    with pytest.raises(InterfaceError, match="no network namespace"):
        node.attach("eth0", netns="dinet-no-such-ns")
    # nothing already accepted was lost on the way
    assert [s.key for s in node.services()] == [a, b]
    assert [i.instance_id for i in node.service(a).instances.values()] == [1]


@needs_root
@needs_bcc
def test_pinned_maps_of_other_sizes_are_refused(node, bpffs_root: Path) -> None:
    from dinet.errors import DataPlaneError
    from dinet.targets.base import SteerSizes
    from dinet.targets.xdp import SteeringNode

    with pytest.raises(DataPlaneError, match="already holds maps"):
        SteeringNode("errors", SteerSizes(max_services=8), bpffs_root=bpffs_root)


@needs_root
@needs_bcc
def test_verifier_refusal_carries_the_log(tmp_path: Path, bpffs_root: Path) -> None:
    from dinet.targets.bcc_program import BccProgram

    src = tmp_path / "bad.bpf.c"
    src.write_text(
        "#include <uapi/linux/bpf.h>\nint xdp_bad(struct xdp_md *ctx) {\n"
        "  char *p = (char *)(long)ctx->data; return p[100];\n}\n"
    )
    prog = BccProgram(str(src), bpffs_root / "bad" / "x")
    try:
        with pytest.raises(VerifierError) as e:
            prog.load("xdp_bad")
        assert "invalid access to packet" in e.value.log
    finally:
        prog.unpin()
        prog.close()


def test_a_refused_program_leaves_no_pinned_map(tmp_path: Path, monkeypatch, bpffs_root: Path) -> None:
    """A node whose program the kernel refuses (here: a read past the packet) must not leave the maps it
    pinned for it behind: nothing could ever use them, and the next node of that name would adopt them."""
    import dinet.targets.bcc_program as bp
    from dinet.errors import VerifierError

    (tmp_path / "refused.bpf.c").write_text(
        "#include <uapi/linux/bpf.h>\n"
        'BPF_TABLE_PINNED("array", __u32, __u32, things, 4, DINET_PIN_DIR "/things");\n'
        "int xdp_refused(struct xdp_md *ctx) { __u8 *p = (void *)(long)ctx->data; return p[100]; }\n"
    )
    monkeypatch.setattr(bp, "EBPF_DIR", tmp_path)
    pin = bpffs_root / "refused" / "prog"
    prog = bp.BccProgram("refused.bpf.c", pin)
    assert (pin / "things").exists()
    with pytest.raises(VerifierError):
        prog.load_main("xdp_refused")
    assert not pin.exists()
