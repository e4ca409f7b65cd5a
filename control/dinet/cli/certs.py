"""`dinet` commands of a CA and certificates for controllers and agents."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_certs_init(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..creds import init_ca

    print(f"CA certificate: {init_ca(Path(a.dir), a.days)} (its key, ca.key, is mode 0600: keep it off the hosts)")


def cmd_certs_issue(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..creds import issue

    key, cert = issue(Path(a.dir), a.name, a.days, tuple(a.ip or ()), force=a.force)
    print(f"{a.name}: {cert} and {key} (mode 0600); copy them with {Path(a.dir) / 'ca.crt'} to its host")


def cmd_certs_revoke(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..creds import revoke

    crl = revoke(Path(a.dir), a.name)
    print(f"{a.name}: revoked in {crl}; copy it beside ca.crt on every host (servers re-read it as it changes)")


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    certs = sub.add_parser("certs", help="a CA and certificates for controllers and agents").add_subparsers(
        dest="sub", required=True
    )
    p = certs.add_parser("init", help="a new CA in DIR")
    p.add_argument("dir")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(fn=cmd_certs_init)
    p = certs.add_parser("issue", help="a key and certificate for NAME, signed by the CA in --dir")
    p.add_argument("name")
    p.add_argument("--dir", required=True)
    p.add_argument("--days", type=int, default=825)
    p.add_argument("--ip", action="append", help="an address it is also reached by (repeatable)")
    p.add_argument("--force", action="store_true", help="replace the identity's key and certificate if it has them")
    p.set_defaults(fn=cmd_certs_issue)
    p = certs.add_parser("revoke", help="add NAME's certificate to the CA's revocation list (--dir/crl.pem)")
    p.add_argument("name")
    p.add_argument("--dir", required=True)
    p.set_defaults(fn=cmd_certs_revoke)
