"""A program of ebpf/ compiled by bcc, its maps pinned in a bpffs folder, attached to interfaces."""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ..errors import DataPlaneError, InterfaceError, TableFullError, VerifierError
from ..paths import EBPF_DIR
from . import netns

log = logging.getLogger(__name__)

XDP_FLAGS = {"auto": 0, "generic": 1 << 1, "native": 1 << 2}


@contextlib.contextmanager
def _stderr_captured() -> Iterator[list[str]]:
    """Captures what the C library writes to fd 2 (bcc prints the verifier log there)."""
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


class BccProgram:
    """One ebpf/*.bpf.c compiled by bcc with -DDINET_PIN_DIR=pin_dir: its BPF_TABLE_PINNED maps are
    created and pinned on first load and reused by every later load, by this or another process."""

    def __init__(self, source: str, pin_dir: Path, defines: Mapping[str, int] | None = None, after: Sequence[str] = ()):
        """`after`: more ebpf/ files compiled as one text after `source` (bcc rewrites map calls only in
        its main text, so code that uses another file's maps cannot #include it)."""
        from bcc import BPF  # Debian's python3-bpfcc, seen through the venv's system site-packages

        self.source = EBPF_DIR / source
        self.pin_dir = pin_dir
        files = [self.source] + [EBPF_DIR / f for f in after]
        for f in files:
            if not f.exists():
                raise DataPlaneError(f"missing eBPF source {f}")
        text = "".join(f'#line 1 "{f}"\n{f.read_text()}\n' for f in files)
        self.created = not pin_dir.exists() or not any(pin_dir.iterdir())  # the maps are pinned anew here
        pin_dir.mkdir(parents=True, exist_ok=True)
        cflags = [f"-I{EBPF_DIR}", f'-DDINET_PIN_DIR="{pin_dir}"', "-Wno-macro-redefined"]
        cflags += [f"-D{k}={v}" for k, v in (defines or {}).items()]
        with _stderr_captured() as err:
            try:
                self.bpf = BPF(text=text.encode(), cflags=cflags)
            except Exception as e:  # bcc raises a bare Exception on a compile error
                raise DataPlaneError(f"bcc could not compile {self.source.name}: {e}") from None
        if "error" in err[0]:
            log.debug("bcc: %s", err[0])
        self._fns: dict[str, Any] = {}

    def load(self, fn_name: str, prog_type: str = "xdp") -> Any:
        """Loads the function as an XDP (or "sched_cls": TC) program; a refusal raises VerifierError
        with the verifier's log."""
        from bcc import BPF

        if fn_name not in self._fns:
            with _stderr_captured() as err:
                try:
                    fn = self.bpf.load_func(fn_name.encode(), BPF.SCHED_CLS if prog_type == "sched_cls" else BPF.XDP)
                except Exception:
                    fn = None
            if fn is None:
                raise VerifierError(f"{self.source.name}:{fn_name}", err[0])
            self._fns[fn_name] = fn
        return self._fns[fn_name]

    def load_main(self, fn_name: str, prog_type: str = "xdp") -> Any:
        """load() for the program a node is built around: if the kernel refuses it, the maps this object
        pinned anew are unpinned before the error goes up (no program could ever use them)."""
        try:
            return self.load(fn_name, prog_type)
        except VerifierError:
            if self.created:
                self.close()
                self.unpin()
            raise

    def table(self, name: str) -> Any:
        return self.bpf.get_table(name.encode())

    def attach(self, fn_name: str, ifname: str, ns: str | None = None, mode: str = "native") -> None:
        """Attaches (or atomically replaces) the program on ifname, in namespace ns."""
        from bcc import BPF

        if mode not in XDP_FLAGS:
            raise InterfaceError(f"XDP mode must be one of {sorted(XDP_FLAGS)}, not {mode!r}")
        fn = self.load(fn_name)
        netns.ifindex(ifname, ns)  # a clear error for a missing interface
        with netns.entered(ns), _stderr_captured() as err:
            try:
                BPF.attach_xdp(ifname.encode(), fn, XDP_FLAGS[mode])
            except Exception as e:
                raise InterfaceError(f"cannot attach {fn_name} to {ifname} ({mode}): {e}") from None
        log.debug("attached %s to %s%s: %s", fn_name, ifname, f" in {ns}" if ns else "", err)

    def attach_tc_ingress(self, fn_name: str, ifname: str, ns: str | None = None) -> None:
        """Attaches a TC program (direct action) at ifname's clsact ingress hook, in namespace ns."""
        self.attach_tc(fn_name, ifname, ns, "ingress")

    def attach_tc(self, fn_name: str, ifname: str, ns: str | None = None, hook: str = "ingress", prio: int = 0) -> None:
        """Attaches a TC program (direct action) at ifname's clsact `hook` (ingress or egress), in ns; prio
        orders it among the hook's programs (lower first; 0: the kernel's next free one)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        fn = self.load(fn_name, "sched_cls")
        idx = netns.ifindex(ifname, ns)
        with netns.entered(ns), IPRoute() as ipr:
            try:
                ipr.tc("add", "clsact", idx)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise InterfaceError(f"cannot add clsact to {ifname}: {e}") from None
            try:
                ipr.tc(
                    "add-filter",
                    "bpf",
                    idx,
                    ":1",
                    fd=fn.fd,
                    name=fn.name,
                    parent="ffff:fff2" if hook == "ingress" else "ffff:fff3",
                    classid=1,
                    direct_action=True,
                    **({"prio": prio} if prio else {}),
                )
            except NetlinkError as e:
                raise InterfaceError(f"cannot attach {fn_name} to {ifname} {hook}: {e}") from None

    @staticmethod
    def detach_tc_filter(ifname: str, ns: str | None, hook: str, prio: int) -> None:
        """Removes the one program attached at ifname's `hook` with `prio` (the others stay); nothing to do when
        the interface or its namespace is gone (its filters went with it)."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            idx = netns.ifindex(ifname, ns)
        except InterfaceError:
            return
        with netns.entered(ns), IPRoute() as ipr:
            try:
                ipr.tc(
                    "del-filter", "bpf", idx, ":1", parent="ffff:fff2" if hook == "ingress" else "ffff:fff3", prio=prio
                )
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise InterfaceError(f"cannot remove the program at {ifname} {hook}: {e}") from None

    @staticmethod
    def detach_tc(ifname: str, ns: str | None = None) -> None:
        """Removes ifname's clsact qdisc, and with it every TC program attached there."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        idx = netns.ifindex(ifname, ns)
        with netns.entered(ns), IPRoute() as ipr:
            try:
                ipr.tc("del", "clsact", idx)
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise InterfaceError(f"cannot detach TC from {ifname}: {e}") from None

    @staticmethod
    def detach(ifname: str, ns: str | None = None, mode: str = "native") -> None:
        from bcc import BPF

        netns.ifindex(ifname, ns)
        with netns.entered(ns), _stderr_captured():
            try:
                BPF.remove_xdp(ifname.encode(), XDP_FLAGS.get(mode, 0))
            except Exception as e:
                raise InterfaceError(f"cannot detach XDP from {ifname}: {e}") from None

    def close(self) -> None:
        """Releases this process's handles; pinned maps and attached programs stay."""
        self.bpf.cleanup()

    def unpin(self) -> None:
        """Removes the pinned maps (the data they hold goes once no program uses them)."""
        if self.pin_dir.exists():
            for p in self.pin_dir.iterdir():
                p.unlink()
            self.pin_dir.rmdir()
        with contextlib.suppress(OSError):
            self.pin_dir.parent.rmdir()  # the node's folder, once its last program is gone
            self.pin_dir.parent.parent.rmdir()  # and the root, once its last node is gone


class ProgramNode:
    """What every program node (steering, decapsulation, BIER) shares: its program (`prog`, maps pinned in
    the node's folder) and main function loaded, a context manager that closes it, destroy() that also
    unpins its maps. Subclasses name PROGRAM (and PROG_TYPE) and hand over the BccProgram they built."""

    PROGRAM = ""
    PROG_TYPE = "xdp"

    def __init__(self, node: str, prog: BccProgram):
        self.node = node
        self.prog = prog
        self.fn = prog.load_main(self.PROGRAM, self.PROG_TYPE)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Releases this process's handles; pinned maps and attached programs stay."""
        self.prog.close()

    def destroy(self) -> None:
        """Closes and unpins every map of the node (attached programs keep theirs until detached)."""
        self.close()
        self.prog.unpin()

    @property
    def prog_fd(self) -> int:
        return int(self.fn.fd)


class XdpProgramNode(ProgramNode):
    """A program node whose main function attaches at XDP."""

    def attach(self, ifname: str, netns: str | None = None, mode: str = "native") -> None:
        self.prog.attach(self.PROGRAM, ifname, netns, mode)

    def detach(self, ifname: str, netns: str | None = None, mode: str = "native") -> None:
        self.prog.detach(ifname, netns, mode)


def write_array(table: Any, start: int, values: list[int]) -> None:
    """Writes consecutive u32 slots of an array map in one BPF_MAP_UPDATE_BATCH (element by element
    where the kernel lacks batch updates on arrays)."""
    n = len(values)
    # u32 keys and values straight from array buffers: building n ctypes objects costs milliseconds
    keys = (table.Key * n).from_buffer(array.array("I", range(start, start + n)))
    leaves = (table.Leaf * n).from_buffer(array.array("I", values))
    try:
        table.items_update_batch(keys, leaves)
    except Exception:
        for i, v in enumerate(values):
            table[table.Key(start + i)] = table.Leaf(v)


def update(table: Any, key: Any, leaf: Any, what: str) -> None:
    """table[key] = leaf, with a full table reported as TableFullError naming `what`."""
    try:
        table[key] = leaf
    except Exception as e:
        err = ctypes.get_errno()
        if err in (errno.E2BIG, errno.ENOSPC, errno.ENOMEM):
            raise TableFullError(
                f"{table.name.decode() if isinstance(table.name, bytes) else table.name} "
                f"is full ({table.max_entries} entries): cannot add {what}"
            ) from None
        raise DataPlaneError(f"cannot write {what}: {e}") from None


def remove_pinned_tree(root: Path) -> None:
    """Removes a bpffs folder and every map pinned below it (a test run's or a benchmark's own root)."""
    if not root.exists():
        return
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    root.rmdir()
