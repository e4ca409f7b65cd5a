"""Commands, interface look-ups and packet sockets inside a network namespace (the targets' helpers)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence

from ..errors import DataPlaneError, InterfaceError

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLONE_NEWNET = 0x40000000


def run(cmd: Sequence[str], netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] if netns else []) + list(cmd)
    res = subprocess.run(full, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise InterfaceError(f"{' '.join(full)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res


@contextlib.contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Runs the block with this thread in `netns` (None: stay where it is), and returns it afterwards.

    Netlink calls (attaching XDP) act in the thread's namespace; bpffs is not affected."""
    if not netns:
        yield
        return
    path = f"/run/netns/{netns}"
    if not os.path.exists(path):
        raise InterfaceError(f"no network namespace {netns!r}")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise InterfaceError(f"cannot enter network namespace {netns!r}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                raise InterfaceError(f"cannot return from network namespace {netns!r}")
    finally:
        os.close(target)
        os.close(home)


def ifindex(ifname: str, netns: str | None = None) -> int:
    with entered(netns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            where = f" in namespace {netns}" if netns else ""
            raise InterfaceError(f"no interface {ifname!r}{where}") from None


def mac_of(ifname: str, netns: str | None = None) -> str:
    out = run(["cat", f"/sys/class/net/{ifname}/address"], netns).stdout.strip()
    return out


ETH_P_ALL = 0x0003


def l2_socket(ifname: str, ns: str | None = None) -> socket.socket:
    """A raw AF_PACKET socket bound to ifname in namespace ns: send() injects a frame there, recv() reads
    every frame the interface sees (both directions). Created inside the namespace, so the name resolves
    there (scapy's own sockets resolve names in the namespace it started in)."""
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            s.bind((ifname, 0))
        except OSError as e:
            s.close()
            raise InterfaceError(f"cannot open a packet socket on {ifname}: {e.strerror}") from None
    return s


class LinkEvents:
    """The kernel's link events of a namespace (`ip -o monitor link`), each setting an Event: a watcher wakes
    at a link change instead of at its next poll. start() again replaces the monitor; stop() ends it."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self._proc: subprocess.Popen[str] | None = None

    def start(self, wake: threading.Event) -> None:
        self.stop()
        cmd = ["ip", "-o", "monitor", "link"]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._proc = proc

        def read() -> None:
            for _ in proc.stdout or ():
                wake.set()

        threading.Thread(target=read, daemon=True, name=f"links-{self.netns or 'host'}").start()

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None


def _links(netns: str | None) -> list[tuple[int, str, bool]]:
    """Every interface of the namespace: (ifindex, name, up with a live link: UP and LOWER_UP)."""
    res = run(["ip", "-j", "link", "show"], netns, check=False)
    if res.returncode != 0:
        where = f"namespace {netns}" if netns else "this host"
        raise DataPlaneError(f"cannot list the interfaces of {where}: {res.stderr.strip()}")
    return [
        (int(link["ifindex"]), link["ifname"], {"UP", "LOWER_UP"} <= set(link.get("flags", [])))
        for link in json.loads(res.stdout or "[]")
    ]


def links_up(ports: list[str], netns: str | None = None) -> dict[str, bool]:
    """Interface -> whether it is up with a live link (UP and LOWER_UP); a missing interface is down."""
    up = {name: live for _, name, live in _links(netns)}
    return {p: up.get(p, False) for p in ports}


class PortMonitor:
    """A node's own link monitor for fast reroute: a NETLINK_ROUTE socket in the node's namespace, joined
    to the link group, calls mark(ifindex, down) the moment the kernel reports a link without IFF_UP or
    IFF_LOWER_UP (or gone), and mark(ifindex, False) when it is back; the node writes where its program reads
    (a TC node its bier_port_down map, a P4 switch its bier_port_state entry). No controller and no planning
    in between: the next frame already takes the backup neighbour. (A kernel probe on netif_carrier_off would
    take user space out too; this kernel has no kprobes and refuses tracing programs, so the monitor is a
    thread.) Every link is marked as it is when the monitor starts (seed); mark ignores ports not its own."""

    RTMGRP_LINK = 1
    RTM_NEWLINK, RTM_DELLINK = 16, 17
    IFF_UP, IFF_LOWER_UP = 0x1, 0x10000

    def __init__(self, name: str, netns: str | None, mark: Callable[[int, bool], None]):
        self.name, self.netns, self.mark = name, netns, mark
        with entered(netns):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, self.RTMGRP_LINK))
        self._stop_r, self._stop_w = os.pipe()
        self.seed()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ports-{name}")
        self._thread.start()

    def seed(self) -> None:
        """Marks the node's ports as they are now."""
        for ifindex, _, live in _links(self.netns):
            self.mark(ifindex, not live)

    def _run(self) -> None:
        while True:
            ready = select.select([self._sock.fileno(), self._stop_r], [], [])[0]
            if self._stop_r in ready:
                return
            try:
                data = self._sock.recv(65536)
            except OSError:
                continue
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if kind in (self.RTM_NEWLINK, self.RTM_DELLINK) and off + 32 <= len(data):
                    _, _, _, index, flags, _ = struct.unpack_from("=BBHiII", data, off + 16)
                    up = kind == self.RTM_NEWLINK and flags & self.IFF_UP and flags & self.IFF_LOWER_UP
                    self.mark(index, not up)
                off += (length + 3) & ~3

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        self._sock.close()
