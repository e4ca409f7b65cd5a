"""A minimal HTTP/1.1 keep-alive client over a socket the caller made (in any namespace)."""

from __future__ import annotations

import socket


class KeepAlive:
    """One TCP connection that asks GET / again and again and returns the instance that answered."""

    def __init__(self, host: str, port: int = 80, timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.host = host
        self.buf = b""

    def get(self) -> str:
        self.sock.sendall(f"GET / HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._read()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        while len(self.buf) < length:
            self._read()
        body, self.buf = self.buf[:length], self.buf[length:]
        return body.decode().strip()

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection to {self.host} closed by the peer")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def get_once(host: str, port: int = 80, timeout: float = 5.0) -> str:
    """One request on a new connection (a new flow)."""
    c = KeepAlive(host, port, timeout)
    try:
        return c.get()
    finally:
        c.close()


def udp_ask(host: str, port: int, payload: bytes = b"hello", timeout: float = 5.0) -> str:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (host, port))
        data, _ = s.recvfrom(65535)
    return data.decode().split(" ", 1)[0]
