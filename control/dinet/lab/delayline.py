"""A delay line for kernels without netem: frames in on one interface come out of the other after a fixed
delay, in both directions, in order.

    python -m dinet.lab.delayline A B --delay-ms 10 [--back-ms 10]

It runs inside a link emulator node that sits on a link (A and B are the node's two ends). Two AF_PACKET
sockets (one per interface, outgoing frames ignored) read every frame; each waits in a FIFO per direction
until its time and is sent out of the other interface. The sends go through the interface's qdisc and TC
egress, so a rate (TBF) and loss (dinet.lab.loss, eBPF) on the same interfaces apply after the delay, as
netem's do. Chosen over an NFQUEUE delay because XDP-redirected frames (the steering node's tunnels) and a
BMv2 switch's ports never pass netfilter: a node on the wire delays everything, whatever the ends are.

Its end of each link must receive whole frames: the runner turns off segmentation and checksum offload on
the neighbours' interfaces. A frame the qdisc refuses (a full TBF) is a tail drop and counted. On SIGTERM it
prints one JSON line of counts and exits."""

from __future__ import annotations

import argparse
import collections
import json
import select
import signal
import socket
import sys
import time
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
FRAME_MAX = 65535


def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


class DelayLine:
    def __init__(self, a: str, b: str, delay_s: float, back_s: float):
        self.sa, self.sb = _open(a), _open(b)
        # per direction: (socket read, socket sent on, delay, FIFO of (due, frame))
        self.dirs: list[tuple[socket.socket, socket.socket, float, collections.deque[tuple[float, bytes]]]] = [
            (self.sa, self.sb, delay_s, collections.deque()),
            (self.sb, self.sa, back_s, collections.deque()),
        ]
        self.control: Any = None  # a text stream of commands (`delay A_MS B_MS`), read when it has a line
        self.counts = {"forwarded": 0, "tail_dropped": 0}
        self.running = True

    def run(self) -> None:
        by_fd = {d[0].fileno(): d for d in self.dirs}
        while self.running:
            now = time.monotonic()
            for _, out, _, q in self.dirs:
                while q and q[0][0] <= now:
                    frame = q.popleft()[1]
                    try:
                        out.send(frame)
                        self.counts["forwarded"] += 1
                    except OSError:  # ENOBUFS: the rate limiter's queue is full
                        self.counts["tail_dropped"] += 1
            dues = [q[0][0] for *_, q in self.dirs if q]
            timeout = max(0.0, min(dues) - time.monotonic()) if dues else 0.5
            fds = list(by_fd) + ([self.control.fileno()] if self.control is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            now = time.monotonic()
            for fd in ready:
                if fd not in by_fd:
                    self._command(self.control.readline())
                    by_fd = {d[0].fileno(): d for d in self.dirs}
                    continue
                src, _, delay, q = by_fd[fd]
                for _ in range(256):  # drain a burst, then send what fell due
                    try:
                        frame = src.recv(FRAME_MAX)
                    except BlockingIOError:
                        break
                    q.append((now + delay, frame))

    def _command(self, line: str) -> None:
        """`delay A_MS B_MS`: the delays of frames read from now on (those queued keep theirs); an empty line
        (the controlling end closed) stops reading commands; anything else is said on stderr and ignored."""
        if not line:
            self.control = None
            return
        parts = line.split()
        try:
            if parts[0] != "delay" or len(parts) != 3 or min(float(parts[1]), float(parts[2])) < 0:
                raise ValueError
        except (IndexError, ValueError):
            print(f"delayline: not a command: {line.strip()!r} (delay A_MS B_MS)", file=sys.stderr, flush=True)
            return
        for k, ms in enumerate((float(parts[1]), float(parts[2]))):
            src, out, _, q = self.dirs[k]
            self.dirs[k] = (src, out, ms / 1e3, q)

    def stop(self, *_: object) -> None:
        self.running = False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay from A to B")
    ap.add_argument("--back-ms", type=float, help="one-way delay from B to A (default: the same)")
    args = ap.parse_args(argv)
    back = args.delay_ms if args.back_ms is None else args.back_ms
    if args.delay_ms < 0 or back < 0:
        print("delayline: a delay is not negative", file=sys.stderr)
        return 2
    try:
        line = DelayLine(args.a, args.b, args.delay_ms / 1e3, back / 1e3)
    except OSError as e:
        print(f"delayline: cannot open {args.a}/{args.b}: {e.strerror}", file=sys.stderr)
        return 1
    line.control = sys.stdin  # the link emulator changes the delay at run time
    signal.signal(signal.SIGTERM, line.stop)
    signal.signal(signal.SIGINT, line.stop)
    print("ready", flush=True)
    line.run()
    print(json.dumps(line.counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
