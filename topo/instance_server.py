"""A small real service instance for demos and tests: HTTP over TCP and an echo over UDP, both answering
with the instance's name. `python3 topo/instance_server.py --name s1a --tcp 80 --udp 53` prints
`ready` on stdout once both sockets listen, and serves until terminated."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _DualStackHTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection, many requests

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = f"{name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Instance", name)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: object) -> None:
            pass

    return Handler


def _udp_echo(name: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))

    def serve() -> None:
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(f"{name} ".encode() + data[:64], peer)

    threading.Thread(target=serve, daemon=True).start()
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tcp", type=int, default=80)
    ap.add_argument("--udp", type=int, default=0)
    a = ap.parse_args(argv)
    httpd = _DualStackHTTPServer(("::", a.tcp), _handler(a.name))
    if a.udp:
        _udp_echo(a.name, a.udp)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
