"""Steering vectors: one service table (installed identically on every target) and the packets to run.

Expected packets are built from the scenario alone: the outer header the RFC 2003 / RFC 2473 tunnel
gets (TTL 64, id 0, no flags, the node's tunnel source) and the instance the ring picks for the flow."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, PadN
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from dinet.model import Instance, InstanceLoad, ServiceKey

from . import Drop, Forward, Pass, Vector

NODE_MAC = "02:d1:00:00:00:01"  # the steering node's port
NEXT_HOP_MAC = "02:d1:00:00:00:fe"  # the static next hop toward the sites
CLIENT_MAC = "02:c1:00:00:00:01"
SRC4 = ipaddress.ip_address("192.0.2.1")
SRC6 = ipaddress.ip_address("2001:db8:ffff::1")

WEB4 = ServiceKey.parse("10.99.0.1:80/tcp")
DNS6 = ServiceKey.parse("[fd00:99::53]:53/udp")
MIXED = ServiceKey.parse("10.99.0.2:8080/tcp")  # an IPv4 VIP served from IPv6 endpoints (4in6)
EMPTY = ServiceKey.parse("10.99.0.3:80/tcp")  # installed, no instance yet
CHAT4 = ServiceKey.parse("10.99.0.4:8000/tcp")  # session-affine: placed by the source port's group
CHAT6 = ServiceKey.parse("[fd00:99::80]:8000/tcp")  # session-affine: placed by the flow label
SESSION = {CHAT4, CHAT6}
PICK4 = ServiceKey.parse("10.99.0.5:8100/tcp")  # two choices: the lower loaded of two ring candidates
TWO_CHOICES = {PICK4}

SERVICES: dict[ServiceKey, list[Instance]] = {
    WEB4: [
        Instance(11, "192.0.2.11", 1, site_id=1),
        Instance(12, "192.0.2.12", 2, site_id=1),
        Instance(13, "192.0.2.13", 3, site_id=2),
    ],
    DNS6: [Instance(21, "2001:db8:2::21", 1, site_id=1), Instance(22, "2001:db8:2::22", 1, site_id=2)],
    MIXED: [Instance(31, "2001:db8:3::31", 1, site_id=3)],
    EMPTY: [],
    CHAT4: [
        Instance(41, "192.0.2.41", 1, site_id=1),
        Instance(42, "192.0.2.42", 1, site_id=2),
        Instance(43, "192.0.2.43", 1, site_id=3),
    ],
    CHAT6: [Instance(61, "2001:db8:6::61", 1, site_id=1), Instance(62, "2001:db8:6::62", 1, site_id=2)],
    PICK4: [
        Instance(51, "192.0.2.51", 1, site_id=1, load=InstanceLoad(4000, 1500, 2, 1)),
        Instance(52, "192.0.2.52", 2, site_id=2, load=InstanceLoad(9000, 300, 0, 1, 200)),
        Instance(53, "2001:db8:5::53", 1, site_id=3, load=InstanceLoad(6000, 1000, 1, 1)),
    ],
}


def client4(dst: str = "10.99.0.1", sport: int = 40000, dport: int = 80, src: str = "10.0.0.2"):
    return Ether(src=CLIENT_MAC, dst=NODE_MAC) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S")


def encap(inner, endpoint) -> Ether:
    """The frame the steering node sends for `inner` (an IP/IPv6 packet) toward `endpoint`."""
    endpoint = ipaddress.ip_address(str(endpoint))
    eth = Ether(src=NODE_MAC, dst=NEXT_HOP_MAC)
    ds = inner.tos if inner.version == 4 else inner.tc  # the DS field rides outside too (RFC 2983, RFC 6040)
    if endpoint.version == 4:
        return (
            eth
            / IP(src=str(SRC4), dst=str(endpoint), ttl=64, id=0, flags=0, tos=ds, proto=4 if inner.version == 4 else 41)
            / inner
        )
    return (
        eth / IPv6(src=str(SRC6), dst=str(endpoint), hlim=64, nh=4 if inner.version == 4 else 41, fl=0, tc=ds) / inner
    )


def l3_datagram(frame):
    """The IP datagram a frame carries, without the Ethernet padding of a short frame."""
    raw = bytes(frame.payload)
    if raw[0] >> 4 == 4:
        return IP(raw[: int.from_bytes(raw[2:4], "big")])
    return IPv6(raw[: 40 + int.from_bytes(raw[4:6], "big")])


def chat6(sport: int = 50000, label: int = 0, src: str = "fd00::2"):
    return (
        Ether(src=CLIENT_MAC, dst=NODE_MAC)
        / IPv6(src=src, dst="fd00:99::80", fl=label)
        / TCP(sport=sport, dport=8000, flags="S")
    )


def session_of(frame) -> int:
    """The frame's session key (dinet.policy.session), from its flow label and source port."""
    from dinet.policy.session import session_key

    label = frame[IPv6].fl if IPv6 in frame else 0
    l4 = frame[TCP] if TCP in frame else frame[UDP]
    return session_key(l4.sport, label)


def flow_of(frame) -> tuple[str, str, int, int, int]:
    """(src, dst, sport, dport, proto) of a TCP or UDP frame, through any IPv6 extension headers."""
    ip = frame[IP] if IP in frame else frame[IPv6]
    l4 = frame[TCP] if TCP in frame else frame[UDP]
    return ip.src, ip.dst, l4.sport, l4.dport, 6 if TCP in frame else 17


def vectors(place) -> list[Vector]:
    """The steering vectors. `place(service, packet)` says which instance the target's ring picks for the
    packet's flow (tests read it from the target's own tables)."""

    def steered(name: str, svc: ServiceKey, pkt) -> Vector:
        inner = l3_datagram(pkt)
        trailer = bytes(pkt.payload)[len(inner) :]  # Ethernet padding rides along, outside the tunnel's length
        return Vector(name, pkt, Forward(Ether(bytes(encap(inner, place(svc, pkt))) + trailer), 0))

    web = client4()
    marked4 = client4(sport=40007)
    marked4[IP].tos = 32 << 2 | 2
    marked6 = (
        Ether(src=CLIENT_MAC, dst=NODE_MAC)
        / IPv6(src="fd00::2", dst="fd00:99::53", tc=18 << 2 | 3)
        / UDP(sport=5354, dport=53)
    )
    marked46 = client4("10.99.0.2", 40008, 8080)
    marked46[IP].tos = 1 << 2
    web_opts = (
        Ether(src=CLIENT_MAC, dst=NODE_MAC)
        / IP(src="10.0.0.2", dst="10.99.0.1", options=[IPOption_Router_Alert()])
        / TCP(sport=40001, dport=80)
    )
    dns = (
        Ether(src=CLIENT_MAC, dst=NODE_MAC)
        / IPv6(src="fd00::2", dst="fd00:99::53")
        / UDP(sport=5353, dport=53)
        / Raw(b"q" * 20)
    )
    dns_ext = (
        Ether(src=CLIENT_MAC, dst=NODE_MAC)
        / IPv6(src="fd00::2", dst="fd00:99::53")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5354, dport=53)
        / Raw(b"q")
    )
    mixed = client4(dst="10.99.0.2", dport=8080, sport=40002)
    short = (
        Ether(src=CLIENT_MAC, dst=NODE_MAC)
        / IP(src="10.0.0.2", dst="10.99.0.1")
        / UDP(sport=1, dport=80)
        / Raw(b"x" * 64)
    )
    frame = bytes(short)
    pad = Ether(
        bytes(
            Ether(src=CLIENT_MAC, dst=NODE_MAC)
            / IP(src="10.0.0.2", dst="10.99.0.1")
            / TCP(sport=40003, dport=80, flags="A")
        )
        + b"\0" * 6
    )  # padded to the 60-byte minimum
    return [
        steered("v4 tcp syn to a VIP is encapsulated IPv4-in-IPv4", WEB4, web),
        steered("v4 with IP options keeps them in the inner header", WEB4, web_opts),
        steered("v6 udp to a VIP is encapsulated IPv6-in-IPv6", DNS6, dns),
        steered("v6 with hop-by-hop and destination options is steered", DNS6, dns_ext),
        steered("v4 VIP served from a v6 endpoint is IPv4-in-IPv6", MIXED, mixed),
        steered("a short frame's Ethernet padding is not counted in the tunnel's length", WEB4, pad),
        steered("the DS field (DSCP CS4, ECN ECT(0)) is copied to the outer IPv4 header", WEB4, marked4),
        steered("the traffic class (AF21, ECN CE) is copied to the outer IPv6 header", DNS6, marked6),
        steered("an IPv4 DS field is the outer IPv6 traffic class (4in6)", MIXED, marked46),
        steered("a session port's flow is placed by its group", CHAT4, client4("10.99.0.4", 61448, 8000)),
        steered("another port of that group is placed by the group too", CHAT4, client4("10.99.0.4", 61455, 8000)),
        steered(
            "an ephemeral port to a session service is placed by its 5-tuple", CHAT4, client4("10.99.0.4", 40000, 8000)
        ),
        steered("a session port to a flow-placed service is placed by its 5-tuple", WEB4, client4(sport=61448)),
        steered("a v6 flow label places the flow by the label", CHAT6, chat6(50000, 0x12345)),
        steered("the flow label wins over a session port", CHAT6, chat6(61448, 0xABCDE)),
        steered("v6 without a flow label falls back to the session port", CHAT6, chat6(61449)),
        steered("v6 without a key is placed by its 5-tuple", CHAT6, chat6(50001)),
        Vector("a port the VIP does not serve passes untouched", client4(dport=81), Pass("pass_unknown_service")),
        Vector(
            "icmp to a VIP passes untouched",
            Ether(src=CLIENT_MAC, dst=NODE_MAC) / IP(src="10.0.0.2", dst="10.99.0.1") / ICMP(),
            Pass("pass_unknown_service"),
        ),
        Vector("traffic to another address passes untouched", client4(dst="10.7.7.7"), Pass("pass_not_service")),
        Vector(
            "arp passes untouched",
            Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.1"),
            Pass("pass_not_service"),
        ),
        Vector("a service without instances drops new flows", client4(dst="10.99.0.3"), Drop("drop_no_instance")),
        Vector(
            "first v4 fragment to a VIP is dropped",
            Ether(src=CLIENT_MAC, dst=NODE_MAC) / IP(src="10.0.0.2", dst="10.99.0.1", flags="MF") / TCP(dport=80),
            Drop("drop_fragment"),
        ),
        Vector(
            "later v4 fragment to a VIP is dropped",
            Ether(src=CLIENT_MAC, dst=NODE_MAC)
            / IP(src="10.0.0.2", dst="10.99.0.1", frag=100, proto=6)
            / Raw(b"y" * 16),
            Drop("drop_fragment"),
        ),
        Vector(
            "v6 fragment to a VIP is dropped",
            Ether(src=CLIENT_MAC, dst=NODE_MAC)
            / IPv6(src="fd00::2", dst="fd00:99::53")
            / IPv6ExtHdrFragment(m=1)
            / UDP(dport=53),
            Drop("drop_fragment"),
        ),
        Vector("v4 header cut short is dropped", Ether(frame[: 14 + 12]), Drop("drop_malformed")),
        Vector("v4 total length beyond the frame is dropped", Ether(frame[: 14 + 20 + 8 + 10]), Drop("drop_malformed")),
        Vector(
            "v4 ihl below 5 is dropped",
            Ether(src=CLIENT_MAC, dst=NODE_MAC) / IP(src="10.0.0.2", dst="10.99.0.1", ihl=4) / TCP(dport=80),
            Drop("drop_malformed"),
        ),
        Vector(
            "l4 ports cut short are dropped",
            Ether(
                bytes(
                    Ether(src=CLIENT_MAC, dst=NODE_MAC)
                    / IP(src="10.0.0.2", dst="10.99.0.1", proto=6, len=22)
                    / Raw(b"ab")
                )
            ),
            Drop("drop_malformed"),
        ),
        Vector("v6 header cut short is dropped", Ether(bytes(dns)[: 14 + 30]), Drop("drop_malformed")),
        # a datagram ends where its IP header says, not where the frame does (Ethernet pads to 60 bytes)
        Vector(
            "l4 ports in the Ethernet padding are dropped",
            Ether(
                bytes(
                    Ether(src=CLIENT_MAC, dst=NODE_MAC)
                    / IP(src="10.0.0.2", dst="10.99.0.1", proto=6, len=22)
                    / Raw(b"\x9c\x40")
                )
                + b"\x00\x50"
                + b"\0" * 22  # padding that reads as dport 80
            ),
            Drop("drop_malformed"),
        ),
        Vector(
            "a v6 extension header running into the padding is dropped",
            Ether(
                bytes(Ether(src=CLIENT_MAC, dst=NODE_MAC) / IPv6(src="fd00::2", dst="fd00:99::53", nh=0, plen=8))
                + bytes(IPv6ExtHdrHopByHop(nh=17, len=1))  # says 16 bytes; the datagram holds 8 of them
                + bytes(UDP(sport=5355, dport=53))  # in the padding
            ),
            Drop("drop_malformed"),
        ),
        Vector(
            "v6 udp ports past the payload length are dropped",
            Ether(
                bytes(Ether(src=CLIENT_MAC, dst=NODE_MAC) / IPv6(src="fd00::2", dst="fd00:99::53", nh=0, plen=8))
                + bytes(IPv6ExtHdrHopByHop(nh=17))
                + bytes(UDP(sport=5356, dport=53))
            ),
            Drop("drop_malformed"),
        ),
        Vector(
            "a v6 datagram holding 6 of the UDP header's 8 bytes is dropped",
            Ether(
                bytes(Ether(src=CLIENT_MAC, dst=NODE_MAC) / IPv6(src="fd00::2", dst="fd00:99::53", nh=17, plen=6))
                + bytes(UDP(sport=5359, dport=53))
            ),
            Drop("drop_malformed"),
        ),
        Vector(
            "three v6 extension headers are more than either plane walks",
            Ether(src=CLIENT_MAC, dst=NODE_MAC)
            / IPv6(src="fd00::2", dst="fd00:99::53")
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / UDP(sport=5357, dport=53),
            Drop("drop_ipv6_exthdr"),
        ),
        Vector(
            "a v6 extension header longer than 256 bytes is more than either plane takes",
            Ether(src=CLIENT_MAC, dst=NODE_MAC)
            / IPv6(src="fd00::2", dst="fd00:99::53")
            / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * 200), PadN(optdata=b"\0" * 92)])  # 304 bytes
            / UDP(sport=5358, dport=53),
            Drop("drop_ipv6_exthdr"),
        ),
    ]


def names() -> list[str]:
    """The vectors' names in their order, for one test per vector (the packets built with any endpoint: a
    target's ring places them when the test runs)."""
    return [v.name for v in vectors(lambda svc, pkt: SERVICES[svc][0].endpoint)]


def named(place, name: str) -> Vector:
    """The vector of that name, placed by `place`."""
    return next(v for v in vectors(place) if v.name == name)


def install_scenario(target) -> None:
    """Installs SERVICES on a target (XDP SteeringNode or P4Node): the same calls on both."""
    target.configure(src4=SRC4, src6=SRC6, static_next_hop=(0, NODE_MAC, NEXT_HOP_MAC))
    for svc, instances in SERVICES.items():
        target.add_service(svc, session=svc in SESSION, two_choices=svc in TWO_CHOICES)
        if instances:
            target.set_instances(svc, instances)


def placement(target):
    """place(service, frame): the endpoint the target's own ring (read back from it) names for the flow."""
    from dinet.policy.session import flow_hash

    def place(svc, frame):
        src, dst, sport, dport, proto = flow_of(frame)
        session = session_of(frame) if target.service(svc).session else 0
        h = flow_hash(ipaddress.ip_address(src), ipaddress.ip_address(dst), sport, dport, proto, session)
        ring = target.ring(svc)
        slot = ring[h % len(ring)]
        return target.service(svc).instances[slot].endpoint

    return place


STORY_CLIENT = "10.0.0.77"


def session_story(target, endpoint) -> str:  # type: ignore[no-untyped-def]
    """A session on a session-affine service, told the same on every target (`endpoint(frame)`: where the
    target sends the frame): after the weights move most of the ring away from the session's instance, the
    session's next connections still go there, while new sessions follow the weights; once that instance
    drains (it takes no new flow), the session's next connection is placed anew (counted re-placed) and the
    session stays on its new instance. Returns the new instance's endpoint; the service's instances are as
    before when it returns."""
    from dinet.model import InstanceState
    from dinet.policy.session import session_ports

    svc, insts = CHAT4, SERVICES[CHAT4]
    ports = iter(p for g in (40, 41) for p in session_ports(g))

    def conn(sport: int) -> str:
        return str(endpoint(client4("10.99.0.4", sport, 8000, src=STORY_CLIENT)))

    first = next(ports)
    home = conn(first)
    mine = next(i for i in insts if str(i.endpoint) == home)
    try:
        target.set_instances(svc, [Instance(i.instance_id, i.endpoint, 1 if i is mine else 50, site_id=i.site_id)
                                   for i in insts])  # fmt: skip
        assert conn(next(ports)) == home
        fresh = [conn(session_ports(g)[0]) for g in range(100, 140)]
        assert fresh.count(home) < 8, fresh  # new sessions follow the weights (1 in 101 of the ring is home's)
        before = target.service_counters(svc)[0]
        target.set_instances(svc, [Instance(i.instance_id, i.endpoint, 1, InstanceState.DRAINING if i is mine
                                            else InstanceState.UP, i.site_id) for i in insts])  # fmt: skip
        moved = conn(next(ports))
        assert moved != home and conn(next(ports)) == moved
        # the first port again: its old connection's packets stay on the draining instance (affinity), a new
        # connection on it (a SYN) goes where its session is now
        ack = client4("10.99.0.4", first, 8000, src=STORY_CLIENT)
        ack[TCP].flags = "A"
        assert str(endpoint(ack)) == home and conn(first) == moved
        assert home not in {conn(session_ports(g)[0]) for g in range(140, 160)}  # no new session on a drain
        after = target.service_counters(svc)[0]
        assert after.sessions_replaced - before.sessions_replaced == 1
        assert after.session_flows - before.session_flows == 2
        return moved
    finally:
        target.set_instances(svc, insts)


PLACEMENT_CLIENT = "10.0.0.78"


def placement_change_story(target, endpoint) -> str:  # type: ignore[no-untyped-def]
    """A service's placement changed in place, told the same on every target: connections from one session
    port group, placed per 5-tuple while the service was not session-affine, keep their instances when it
    becomes so (established flows never move); a new connection (a SYN) on any of those same 5-tuples then
    goes to the session's instance, whatever the affinity table remembered of the tuple; back to per-flow
    placement, the tuples stay where they went last. Returns the session's endpoint; the service is
    session-affine again when it returns."""
    from dinet.policy.session import session_ports

    svc = CHAT4
    ports = session_ports(60)

    def frame(sport: int, flags: str):  # type: ignore[no-untyped-def]
        f = client4("10.99.0.4", sport, 8000, src=PLACEMENT_CLIENT)
        f[TCP].flags = flags
        return f

    def at(sport: int, flags: str) -> str:
        return str(endpoint(frame(sport, flags)))

    try:
        target.add_service(svc, session=False)
        first = {p: at(p, "S") for p in ports}
        assert len(set(first.values())) > 1, first  # per 5-tuple: the group's ports spread over instances
        target.add_service(svc, session=True)
        assert {p: at(p, "A") for p in ports} == first  # established flows stay where they were placed
        again = {p: at(p, "S") for p in ports}
        home = again[ports[0]]
        assert set(again.values()) == {home}, again  # a new connection on a remembered tuple: its session's
        assert {p: at(p, "A") for p in ports} == again
        target.add_service(svc, session=False)
        assert {p: at(p, "A") for p in ports} == again  # the tuples stay where they went last
        return home
    finally:
        target.add_service(svc, session=True)


def two_choices_story(target, endpoint) -> int:  # type: ignore[no-untyped-def]
    """New flows of a two-choices service, told the same on every target against the reference
    (dinet.policy.choices): each goes to the lower loaded of its two ring candidates, the load being the one the
    controller wrote plus what the flows placed there since add; an established flow's packets count nothing;
    a load of a new report restarts the counts. Returns how many flows the second candidate took; the service's
    instances are as installed (under a later report) when it returns."""
    from dinet.policy.choices import Placed, candidates, choose

    svc, insts = PICK4, SERVICES[PICK4]
    seq = max(i.load.seq for i in target.service(svc).instances.values() if i.load) + 1
    client = f"10.1.{seq % 256}.79"  # flows no earlier telling of the story placed

    def install(loads: dict[int, InstanceLoad]) -> None:
        target.set_instances(svc, [Instance(i.instance_id, i.endpoint, i.weight, site_id=i.site_id,
                                            load=loads[i.instance_id]) for i in insts])  # fmt: skip

    def run(sports: range, placed: Placed) -> tuple[int, int]:
        st = target.service(svc)
        ring = target.ring(svc)
        slot_of = {str(i.endpoint): s for s, i in st.instances.items()}
        second = spread = 0
        for sport in sports:
            first, other = candidates(ring, ipaddress.ip_address(client), PICK4.vip, sport, PICK4.port, 6)
            want = choose(first, other, st.instances, placed)
            got = slot_of[str(endpoint(client4("10.99.0.5", sport, PICK4.port, src=client)))]
            assert got == want, (sport, first, other, got, want, placed)
            second += got != first
            ack = client4("10.99.0.5", sport, PICK4.port, src=client)
            ack[TCP].flags = "A"
            assert slot_of[str(endpoint(ack))] == got  # its next packet stays, and counts nothing
        spread = len({slot for slot, n in placed.count.items() if n})
        return second, spread

    loads = {i.instance_id: replace(i.load, seq=seq) for i in insts if i.load}
    try:
        install(loads)
        second, spread = run(range(41000, 41040), Placed())
        assert spread == 3, spread  # the counts spread the flows over every instance
        # a new report: the counts restart from the loads it wrote (52, the heaviest, now the lightest; each flow
        # placed there adds 1,200 from the first, 300 more past its 4 free)
        loads = {51: InstanceLoad(9000, 1500, 0, seq + 1), 52: InstanceLoad(500, 300, 4, seq + 1, 1200),
                 53: InstanceLoad(9000, 1000, 0, seq + 1)}  # fmt: skip
        install(loads)
        more, _ = run(range(42000, 42030), Placed())
        return second + more
    finally:
        install({i.instance_id: replace(i.load, seq=seq + 2) for i in insts if i.load})
