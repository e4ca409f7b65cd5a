"""The control plane's model of services and instances: plain dataclasses, parsed and validated once."""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from dataclasses import dataclass, field

from . import consts
from .errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
PROTOCOLS = {"tcp": 6, "udp": 17}


def parse_address(text: str | IPAddress) -> IPAddress:
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    try:
        return ipaddress.ip_address(str(text).strip("[]"))
    except ValueError:
        raise ConfigError(f"not an IPv4 or IPv6 address: {text!r}") from None


def family_of(addr: IPAddress) -> int:
    return consts.get("DINET_AF_INET") if addr.version == 4 else consts.get("DINET_AF_INET6")


class InstanceState(enum.IntEnum):
    """Values of inst_value.state (DINET_INST_* in dinet_consts.h)."""

    DOWN = consts.get("DINET_INST_DOWN")
    UP = consts.get("DINET_INST_UP")
    DRAINING = consts.get("DINET_INST_DRAINING")


_SERVICE_RE = re.compile(r"^(?P<addr>\[[^\]]+\]|[^:/\[\]]+):(?P<port>[^/]+)/(?P<proto>\w+)$")


@dataclass(frozen=True, order=True)
class ServiceKey:
    """A service as clients address it: VIP, L4 protocol and port. Text form `10.0.0.1:80/tcp`, `[fd00::1]:53/udp`."""

    vip: IPAddress
    port: int
    proto: str = "tcp"

    def __post_init__(self) -> None:
        object.__setattr__(self, "vip", parse_address(self.vip))
        # keys are looked up on every metric report: hash once (ipaddress hashes are slow)
        object.__setattr__(self, "_hash", hash((int(self.vip), self.vip.version, self.port, self.proto)))
        if self.proto not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {sorted(PROTOCOLS)}, not {self.proto!r}")
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be 1-65535, not {self.port!r}")

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    @classmethod
    def parse(cls, text: str) -> ServiceKey:
        m = _SERVICE_RE.match(text.strip())
        if not m:
            raise ConfigError(f"a service is VIP:PORT/PROTO (10.0.0.1:80/tcp, [fd00::1]:53/udp), not {text!r}")
        try:
            port = int(m.group("port"))
        except ValueError:
            raise ConfigError(f"port must be a number, not {m.group('port')!r}") from None
        return cls(parse_address(m.group("addr")), port, m.group("proto").lower())

    @property
    def proto_number(self) -> int:
        return PROTOCOLS[self.proto]

    def __str__(self) -> str:
        host = f"[{self.vip}]" if self.vip.version == 6 else str(self.vip)
        return f"{host}:{self.port}/{self.proto}"


@dataclass(frozen=True)
class InstanceLoad:
    """What a two-choices service's data plane compares its two candidates by (dinet_consts.h,
    DINET_SVC_TWO_CHOICES): `value` now (dinet: a new request's predicted TTFT, microseconds), plus, once the
    data plane has placed n new flows there since the report, n x each + max(0, n - free) x step (dinet: each
    new request's prefill delays the first tokens of those placed after it; past `free`, each waits for a place
    too). `seq` names the report the value is of (1..2^32-1): the data plane's count of flows placed restarts
    when it changes."""

    value: int
    step: int = 0
    free: int = 0
    seq: int = 1
    each: int = 0

    def __post_init__(self) -> None:
        for name, top in (("value", 2**64), ("step", 2**32), ("free", 2**32), ("each", 2**32)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < top:
                raise ConfigError(f"load {name} must be an integer 0..{top - 1}, not {v!r}")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or not 1 <= self.seq < 2**32:
            raise ConfigError(f"load seq must be 1..2^32-1, not {self.seq!r}")

    def now(self, placed: int) -> int:
        """The load after `placed` new flows (the data plane's own arithmetic)."""
        return self.value + placed * self.each + max(0, placed - self.free) * self.step


@dataclass(frozen=True)
class Instance:
    """One instance of a service: the operator's id, the tunnel endpoint that reaches it, its weight and state,
    and for a two-choices service the load its new flows are compared by (None: none written, 0)."""

    instance_id: int
    endpoint: IPAddress
    weight: int = 1
    state: InstanceState = InstanceState.UP
    site_id: int = 0
    name: str = field(default="", compare=False)
    load: InstanceLoad | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", parse_address(self.endpoint))
        object.__setattr__(self, "state", InstanceState(self.state))
        if not isinstance(self.instance_id, int) or not 1 <= self.instance_id < 2**32:
            raise ConfigError(f"instance id must be 1..2^32-1, not {self.instance_id!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or not 0 <= self.weight < 2**32:
            if isinstance(self.weight, float) and (math.isnan(self.weight) or self.weight < 0):
                raise ConfigError(f"weight of instance {self.instance_id} must be >= 0, not {self.weight!r}")
            raise ConfigError(
                f"weight of instance {self.instance_id} must be an integer 0..2^32-1, not {self.weight!r}"
            )
        if not 0 <= self.site_id < 2**16:
            raise ConfigError(f"site id must be 0..65535, not {self.site_id!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "instance_id": self.instance_id,
            "endpoint": str(self.endpoint),
            "weight": self.weight,
            "state": self.state.name.lower(),
            "site_id": self.site_id,
        } | ({"load": self.load.__dict__} if self.load else {})

    @property
    def usable(self) -> bool:
        """Takes new flows."""
        return self.state == InstanceState.UP and self.weight > 0


class TrafficClass(enum.Enum):
    """draft-an-cats-usecase-ai s1: a delay-sensitive service (a live avatar, a chat answer) and a
    delay-tolerant one (a batch job) are steered differently."""

    DELAY_SENSITIVE = "delay-sensitive"
    DELAY_TOLERANT = "delay-tolerant"


class Strategy(enum.Enum):
    """How a service's new flows are placed: dinet's decision, or a baseline to compare it with.

    dinet: compute and network metrics, per traffic class (dinet.policy.decide). anycast: the nearest site
    with a live instance, compute ignored (what IP anycast gives). compute-only: spread by compute load
    alone, the network ignored (a load balancer's least-loaded). round-robin: every live instance the same
    weight (in a data plane that hashes flows onto a weighted ring, equal weights spread new flows evenly:
    the flow-level round robin). random: every live instance a random weight, drawn anew at each decision."""

    DINET = "dinet"
    ANYCAST = "anycast"
    COMPUTE_ONLY = "compute-only"
    ROUND_ROBIN = "round-robin"
    RANDOM = "random"


@dataclass(frozen=True)
class Slo:
    """A service's objectives: time to first token and time per output token (0: none)."""

    ttft_ms: float = 0.0
    tpot_ms: float = 0.0


@dataclass(frozen=True)
class SitePath:
    """Network metrics from an ingress node to a site: the configured or measured one-way delay, and loss."""

    delay_ms: float = 0.0
    loss: float = 0.0
    security: int = 0  # the path's security level (0: the public internet)
    bw_mbit: float = 0.0  # the path's bottleneck rate (0: unknown, no transfer time counted)

    def transfer_ms(self, kb: float) -> float:
        """The time `kb` kilobytes take at the path's rate (0 where the rate is unknown)."""
        return kb * 8 / self.bw_mbit if kb and self.bw_mbit else 0.0


@dataclass(frozen=True)
class InstancePrior:
    """What the operator knows of an instance before its reports teach it (an engine profile's figures; 0:
    unknown, the policy's default applies). dinet.policy.predict learns each from reports and then uses that."""

    service_s: float = 0.0  # how long a request holds its place
    capacity: float = 0.0  # requests at once
    prefill_ms: float = 0.0  # TTFT with no queue
    tpot_ms: float = 0.0  # time per output token


@dataclass(frozen=True)
class ServiceIntent:
    """A service as the operator wants it steered: its class, instances and constraints."""

    key: ServiceKey
    cls: TrafficClass
    instances: tuple[Instance, ...]
    min_security: int = 0  # an instance whose site's path is below this level takes none of its flows
    tier_order: tuple[str, ...] = ()  # model tiers, preferred first: the best tier with room takes new flows
    tiers: dict[int, str] = field(default_factory=dict)  # instance id -> the tier it serves
    strategy: Strategy | None = None  # how its flows are placed (None: the controller's policy's)
    transfer_kb: float = 0.0  # what a request moves before it is served (a KV cache): its time counts as delay
    slo: Slo = Slo()  # what a request should see (0: no objective; predictions still rank instances)
    priors: dict[int, InstancePrior] = field(default_factory=dict)  # instance id -> what it is known to do
    session: bool = False  # session-affine: new flows placed by their session key (dinet.policy.session)
    # two-choices: a new flow takes two candidates from the ring and goes to the one with the lower load
    two_choices: bool = False

    @property
    def placement(self) -> str:
        """How its new flows are placed: flow (the ring, by the 5-tuple), session, two-choices."""
        return "session" if self.session else "two-choices" if self.two_choices else "flow"

    def rank(self, instance_id: int) -> int:
        """The instance's place in the tier order (0 best; tiers not in the order come last)."""
        tier = self.tiers.get(instance_id)
        return self.tier_order.index(tier) if tier in self.tier_order else len(self.tier_order)
