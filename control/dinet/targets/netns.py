"""Commands, interface look-ups and packet sockets inside a network namespace (the targets' helpers)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence

from ..errors import InterfaceError

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
