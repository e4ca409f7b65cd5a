"""Packet vectors shared by both data planes: each is (name, input packet, ingress port, expected outcome).

The eBPF tests run them with BPF_PROG_TEST_RUN, the BMv2 tests through simple_switch_grpc; a vector
that passes on one plane and fails on the other is a bug in one of them."""

from __future__ import annotations

from dataclasses import dataclass

from scapy.packet import Packet


@dataclass(frozen=True)
class Forward:
    """The packet leaves on `port` as `packet` (port 0 is the port it came in on)."""

    packet: Packet
    port: int = 0


@dataclass(frozen=True)
class Drop:
    """The packet is dropped and the named counter (a DINET_DROP_* reason, lower case) goes up by one."""

    reason: str


@dataclass(frozen=True)
class Pass:
    """The packet is not the data plane's business: it goes on unchanged to the host's own stack and
    the named counter (a DINET_PASS_* reason) goes up."""

    reason: str


@dataclass(frozen=True)
class Vector:
    name: str
    packet: Packet
    expect: Forward | Drop | Pass | list[Forward]
    port: int = 0
