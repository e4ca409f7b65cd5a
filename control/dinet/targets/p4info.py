"""P4Info: names of tables, actions, match fields, parameters and counters, as p4c wrote them. Every id the
P4Runtime target sends comes from here, never from a hand-copied number."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from ..errors import ConfigError


def _p4i():  # type: ignore[no-untyped-def]
    from finsy.proto import p4i

    return p4i


@dataclass(frozen=True)
class Field:
    id: int
    bitwidth: int


class P4Info:
    def __init__(self, text: str):
        p4i = _p4i()
        self.msg = text_format.Parse(text, p4i.P4Info())
        self.tables = {t.preamble.name: t for t in self.msg.tables}
        self.actions = {a.preamble.name: a for a in self.msg.actions}
        self.counters = {c.preamble.name: c for c in self.msg.counters}

    @classmethod
    def load(cls, path: Path) -> P4Info:
        return cls(path.read_text())

    def _find(self, kind: str, items: dict, name: str):  # type: ignore[no-untyped-def]
        if name in items:
            return items[name]
        hits = [v for k, v in items.items() if k.endswith("." + name)]
        if len(hits) != 1:
            raise ConfigError(f"the P4 program has {'no' if not hits else 'more than one'} {kind} {name!r}")
        return hits[0]

    def table(self, name: str):  # type: ignore[no-untyped-def]
        return self._find("table", self.tables, name)

    def action(self, name: str):  # type: ignore[no-untyped-def]
        return self._find("action", self.actions, name)

    def counter(self, name: str):  # type: ignore[no-untyped-def]
        return self._find("counter", self.counters, name)

    def match_field(self, table: str, name: str) -> Field:
        t = self.table(table)
        for m in t.match_fields:
            if m.name == name or m.name.endswith("." + name):
                return Field(m.id, m.bitwidth)
        raise ConfigError(f"table {t.preamble.name} has no match field {name!r}")

    def param(self, action: str, name: str) -> Field:
        a = self.action(action)
        for p in a.params:
            if p.name == name:
                return Field(p.id, p.bitwidth)
        raise ConfigError(f"action {a.preamble.name} has no parameter {name!r}")


def encode(value: int | bytes, bitwidth: int) -> bytes:
    """P4Runtime s8.4: the canonical (shortest) big-endian bytestring of a value of `bitwidth` bits."""
    if isinstance(value, bytes):
        value = int.from_bytes(value, "big")
    if value < 0 or value >> bitwidth:
        raise ConfigError(f"{value:#x} does not fit in {bitwidth} bits")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
