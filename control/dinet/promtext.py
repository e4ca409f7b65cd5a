"""Prometheus text exposition: one way to fetch it and one to read it, for everything in dinet that scrapes
(the metrics agent, `dinet status`, the lab, a device's offload view, the client-side pickers).

A scrape has one deadline for the whole answer (a server that drips a byte a second cannot hold it longer)
and a size cap (a 300 MB body is refused, not read into memory); samples come from prometheus_client's own
parser."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Iterator

from .errors import ConfigError

MAX_BYTES = 16 << 20  # a vLLM /metrics page is tens of KiB


def fetch(url: str, timeout: float = 2.0, max_bytes: int = MAX_BYTES, ca: str | None = None) -> str:
    """The body of `url` (http or https; `ca`: the CA that signs an https server's certificate, default the
    system's), or a ConfigError naming what went wrong: no answer, an HTTP error, more than `max_bytes`, or
    not all of it within `timeout` seconds."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError(f"cannot scrape {url!r}: not an http(s) URL")
    deadline = time.monotonic() + timeout
    if u.scheme == "https":
        from .creds import client_tls

        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            u.hostname, u.port, timeout=timeout, context=client_tls(ca)
        )
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""))
        resp = conn.getresponse()
        if resp.status != 200:
            raise ConfigError(f"cannot scrape {url}: HTTP {resp.status}")
        size = int(resp.getheader("Content-Length") or 0)
        if size > max_bytes:
            raise ConfigError(f"cannot scrape {url}: {size} bytes is more than {max_bytes}")
        body, got = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConfigError(f"cannot scrape {url}: no whole answer within {timeout:g} s")
            if conn.sock is not None:
                conn.sock.settimeout(left)
            chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
            if not chunk:
                break
            got += len(chunk)
            if got > max_bytes:
                raise ConfigError(f"cannot scrape {url}: more than {max_bytes} bytes")
            body.append(chunk)
        return b"".join(body).decode("utf-8", "replace")
    except (TimeoutError, OSError, http.client.HTTPException) as e:
        raise ConfigError(f"cannot scrape {url}: {e or type(e).__name__}") from None
    finally:
        conn.close()


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample, or a ConfigError for text that is not Prometheus's."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                yield s.name, dict(s.labels), float(s.value)
    except ValueError as e:
        raise ConfigError(f"not Prometheus text: {e}") from None
