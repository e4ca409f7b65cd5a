"""The P4Runtime target: a BMv2 simple_switch_grpc (or any P4Runtime server) programmed over gRPC.

Arbitration with an election id on the stream channel, SetForwardingPipelineConfig, batched WriteRequests of
table and multicast-group entries, reads of table entries and counters. Names come from the P4Info."""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ..errors import DataPlaneError
from .p4info import P4Info, encode

log = logging.getLogger(__name__)


def _p4r():  # type: ignore[no-untyped-def]
    from finsy.proto import p4r

    return p4r


def _stub(channel: grpc.Channel):  # type: ignore[no-untyped-def]
    from finsy.proto.p4.v1 import p4runtime_pb2_grpc

    return p4runtime_pb2_grpc.P4RuntimeStub(channel)


@dataclass(frozen=True)
class TableEntry:
    """An entry as dinet writes and reads it: names and integer values."""

    table: str
    match: tuple[tuple[str, int], ...]  # exact match fields
    action: str
    params: tuple[tuple[str, int], ...] = ()
    is_default: bool = False
    metadata: bytes = b""  # opaque to the switch, kept with the entry and read back (P4Runtime TableEntry.metadata)


# a whole counter array (services x instances cells, 16 MB at the default sizes) comes in one Read reply
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20)]


class P4RuntimeSwitch:
    """One P4Runtime device. Use as a context manager; errors name the switch and the entry."""

    def __init__(
        self,
        address: str,
        device_id: int = 0,
        election_id: int = 1,
        name: str = "",
        timeout: float = 10.0,
        arbitrate: bool = True,
    ):
        """arbitrate=False: a read-only client (Read needs no stream channel and no primary role)."""
        self.address, self.device_id, self.name = address, device_id, name or address
        self.arbitrate = arbitrate
        self.election_id = election_id
        self.timeout = timeout
        self.p4info: P4Info | None = None
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = _stub(self.channel)
        self._requests: queue.Queue[Any] = queue.Queue()
        self._arbitration = threading.Event()
        self._arb_status: Any = None
        self._stream: Any = None
        self._reader: threading.Thread | None = None

    # ---- connection and arbitration -----------------------------------------------------------------
    def connect(self) -> P4RuntimeSwitch:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=self.timeout)
        except grpc.FutureTimeoutError:
            raise DataPlaneError(f"switch {self.name}: no P4Runtime server at {self.address}") from None
        if not self.arbitrate:
            return self
        p4r = _p4r()

        def requests() -> Iterator[Any]:
            while True:
                item = self._requests.get()
                if item is None:
                    return
                yield item

        self._stream = self.stub.StreamChannel(requests())
        self._reader = threading.Thread(target=self._read_stream, daemon=True)
        self._reader.start()
        req = p4r.StreamMessageRequest()
        req.arbitration.device_id = self.device_id
        req.arbitration.election_id.high = self.election_id >> 64
        req.arbitration.election_id.low = self.election_id & (2**64 - 1)
        self._requests.put(req)
        if not self._arbitration.wait(self.timeout):
            raise DataPlaneError(f"switch {self.name}: no arbitration answer from {self.address}")
        if self._arb_status is not None and self._arb_status.code != 0:
            raise DataPlaneError(
                f"switch {self.name}: not primary (election id {self.election_id}): {self._arb_status.message}"
            )
        return self

    def _read_stream(self) -> None:
        try:
            for msg in self._stream:
                if msg.HasField("arbitration"):
                    self._arb_status = msg.arbitration.status
                    self._arbitration.set()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                log.warning("switch %s: stream channel closed: %s", self.name, e.details())
        finally:
            self._arbitration.set()

    def reconnect(self) -> P4RuntimeSwitch:
        """A new channel and stream (after the server restarted), arbitration again."""
        self.close()
        self.channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self.stub = _stub(self.channel)
        self._requests = queue.Queue()
        self._arbitration = threading.Event()
        self._arb_status = None
        return self.connect()

    def close(self) -> None:
        self._requests.put(None)
        if self._stream is not None:
            self._stream.cancel()
        self.channel.close()

    def __enter__(self) -> P4RuntimeSwitch:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _election(self, msg: Any) -> None:
        msg.election_id.high = self.election_id >> 64
        msg.election_id.low = self.election_id & (2**64 - 1)

    def _call(self, what: str, fn: Any, req: Any) -> Any:
        try:
            return fn(req, timeout=self.timeout)
        except grpc.RpcError as e:
            detail = e.details() or ""
            raise DataPlaneError(f"switch {self.name}: {what} failed: {e.code().name} {detail}".strip()) from None
        except ValueError as e:  # grpc's word for a closed channel
            raise DataPlaneError(f"switch {self.name}: {what} failed: {e}") from None

    # ---- pipeline ---------------------------------------------------------------------------------------
    @staticmethod
    def pipeline_cookie(p4info_path: Path, device_config: Path) -> int:
        """The cookie dinet sets with a pipeline: 64 bits of the SHA-256 of its P4Info and device config, so a
        controller can tell whether a running switch holds exactly the program it would set."""
        h = hashlib.sha256(p4info_path.read_bytes() + b"\0" + device_config.read_bytes())
        return int.from_bytes(h.digest()[:8], "big")

    def set_pipeline(self, p4info_path: Path, device_config: Path) -> None:
        p4r = _p4r()
        self.p4info = P4Info.load(p4info_path)
        req = p4r.SetForwardingPipelineConfigRequest()
        req.device_id = self.device_id
        self._election(req)
        req.action = p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT
        req.config.p4info.CopyFrom(self.p4info.msg)
        req.config.p4_device_config = device_config.read_bytes()
        req.config.cookie.cookie = self.pipeline_cookie(p4info_path, device_config)
        self._call("SetForwardingPipelineConfig", self.stub.SetForwardingPipelineConfig, req)

    def running_cookie(self) -> int | None:
        """The cookie of the pipeline the switch runs (None: no pipeline, or one set without a cookie)."""
        p4r = _p4r()
        req = p4r.GetForwardingPipelineConfigRequest()
        req.device_id = self.device_id
        req.response_type = p4r.GetForwardingPipelineConfigRequest.COOKIE_ONLY
        try:
            resp = self.stub.GetForwardingPipelineConfig(req, timeout=self.timeout)
        except ValueError as e:
            raise DataPlaneError(f"switch {self.name}: GetForwardingPipelineConfig failed: {e}") from None
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:  # no pipeline set yet
                return None
            what = f"{e.code().name} {e.details()}"
            raise DataPlaneError(f"switch {self.name}: GetForwardingPipelineConfig failed: {what}") from None
        return int(resp.config.cookie.cookie) if resp.config.HasField("cookie") else None

    def use_pipeline(self, p4info_path: Path) -> None:
        """Adopts the P4Info of a pipeline the switch already runs (a controller restart)."""
        self.p4info = P4Info.load(p4info_path)

    # ---- entries ----------------------------------------------------------------------------------------
    def _info(self) -> P4Info:
        if self.p4info is None:
            raise DataPlaneError(f"switch {self.name}: no pipeline set")
        return self.p4info

    def _table_entry_msg(self, e: TableEntry) -> Any:
        p4r = _p4r()
        info = self._info()
        msg = p4r.TableEntry()
        msg.table_id = info.table(e.table).preamble.id
        for name, value in e.match:
            f = info.match_field(e.table, name)
            m = msg.match.add()
            m.field_id = f.id
            m.exact.value = encode(value, f.bitwidth)
        action = info.action(e.action)
        msg.action.action.action_id = action.preamble.id
        for name, value in e.params:
            p = info.param(e.action, name)
            ap = msg.action.action.params.add()
            ap.param_id = p.id
            ap.value = encode(value, p.bitwidth)
        if e.is_default:
            msg.is_default_action = True
        if e.metadata:
            msg.metadata = e.metadata
        return msg

    def write(self, entries: Sequence[TableEntry], op: str = "INSERT", batch: int = 512) -> None:
        """Writes entries in batched WriteRequests (op: INSERT, MODIFY or DELETE; default actions MODIFY)."""
        p4r = _p4r()
        for start in range(0, len(entries), batch):
            chunk = entries[start : start + batch]
            req = p4r.WriteRequest()
            req.device_id = self.device_id
            self._election(req)
            for e in chunk:
                u = req.updates.add()
                u.type = p4r.Update.MODIFY if e.is_default else getattr(p4r.Update, op)
                u.entity.table_entry.CopyFrom(self._table_entry_msg(e))
            what = f"{op} of {len(chunk)} entries (first: {chunk[0].table} {dict(chunk[0].match)})"
            self._call(what, self.stub.Write, req)

    def write_multicast_groups(self, groups: dict[int, list[tuple[int, int]]], op: str = "INSERT") -> None:
        """Multicast groups: id -> [(egress port, replica id)]."""
        p4r = _p4r()
        if not groups:
            return
        req = p4r.WriteRequest()
        req.device_id = self.device_id
        self._election(req)
        for gid, replicas in sorted(groups.items()):
            u = req.updates.add()
            u.type = getattr(p4r.Update, op)
            g = u.entity.packet_replication_engine_entry.multicast_group_entry
            g.multicast_group_id = gid
            for port, rid in replicas:
                r = g.replicas.add()
                r.egress_port = port
                r.instance = rid
        self._call(f"{op} of {len(groups)} multicast groups", self.stub.Write, req)

    def write_clone_session(self, session_id: int, replicas: list[tuple[int, int]], op: str = "INSERT") -> None:
        """A clone session: id -> [(egress port, instance)]."""
        p4r = _p4r()
        req = p4r.WriteRequest()
        req.device_id = self.device_id
        self._election(req)
        u = req.updates.add()
        u.type = getattr(p4r.Update, op)
        cs = u.entity.packet_replication_engine_entry.clone_session_entry
        cs.session_id = session_id
        for port, instance in replicas:
            r = cs.replicas.add()
            r.egress_port = port
            r.instance = instance
        self._call(f"{op} of clone session {session_id}", self.stub.Write, req)

    def read_multicast_groups(self) -> dict[int, list[tuple[int, int]]]:
        p4r = _p4r()
        req = p4r.ReadRequest()
        req.device_id = self.device_id
        req.entities.add().packet_replication_engine_entry.multicast_group_entry.multicast_group_id = 0
        out = {}
        for resp in self._read(req):
            for ent in resp.entities:
                g = ent.packet_replication_engine_entry.multicast_group_entry
                out[g.multicast_group_id] = sorted((r.egress_port, r.instance) for r in g.replicas)
        return out

    def _read(self, req: Any) -> Iterable[Any]:
        try:
            return list(self.stub.Read(req, timeout=self.timeout))
        except grpc.RpcError as e:
            raise DataPlaneError(f"switch {self.name}: Read failed: {e.code().name} {e.details()}") from None
        except ValueError as e:  # grpc's word for a closed channel
            raise DataPlaneError(f"switch {self.name}: Read failed: {e}") from None

    def p4info_tables(self) -> list[str]:
        """The tables of the pipeline, by the names entries use (P4Info aliases)."""
        return [t.preamble.alias or t.preamble.name for t in self._info().msg.tables]

    def read_table(self, table: str) -> list[TableEntry]:
        """The table's entries, decoded back into names and integers."""
        p4r = _p4r()
        info = self._info()
        t = info.table(table)
        req = p4r.ReadRequest()
        req.device_id = self.device_id
        req.entities.add().table_entry.table_id = t.preamble.id
        fields = {m.id: m.name for m in t.match_fields}
        out = []
        for resp in self._read(req):
            for ent in resp.entities:
                te = ent.table_entry
                action = next(a for a in info.msg.actions if a.preamble.id == te.action.action.action_id)
                pnames = {p.id: p.name for p in action.params}
                out.append(
                    TableEntry(
                        t.preamble.alias or t.preamble.name,
                        tuple(sorted((fields[m.field_id], int.from_bytes(m.exact.value, "big")) for m in te.match)),
                        action.preamble.alias or action.preamble.name,
                        tuple((pnames[p.param_id], int.from_bytes(p.value, "big")) for p in te.action.action.params),
                        metadata=bytes(te.metadata),
                    )
                )
        return out

    def read_counter_cells(self, cells: Mapping[str, Sequence[int] | None]) -> dict[str, dict[int, tuple[int, int]]]:
        """Counter -> index -> (packets, bytes) of the named cells (None: every cell of that counter), in one
        Read (a whole counter array is thousands of cells to decode: a service's few are what a scrape needs)."""
        p4r = _p4r()
        info = self._info()
        ids = {name: info.counter(name).preamble.id for name in cells}
        names = {cid: name for name, cid in ids.items()}
        req = p4r.ReadRequest()
        req.device_id = self.device_id
        for name, indexes in cells.items():
            for i in [None] if indexes is None else indexes:
                ce = req.entities.add().counter_entry
                ce.counter_id = ids[name]
                if i is not None:
                    ce.index.index = i
        out: dict[str, dict[int, tuple[int, int]]] = {name: {} for name in cells}
        if not req.entities:
            return out
        for resp in self._read(req):
            for ent in resp.entities:
                ce = ent.counter_entry
                out[names[ce.counter_id]][ce.index.index] = (ce.data.packet_count, ce.data.byte_count)
        return out

    def read_counters(self, counter: str) -> dict[int, tuple[int, int]]:
        """Index -> (packets, bytes) of every cell of an indirect counter."""
        return self.read_counter_cells({counter: None})[counter]
