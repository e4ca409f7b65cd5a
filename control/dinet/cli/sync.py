"""`dinet` commands of model synchronisation: the repository's push, a cloud's receiver, pinning a sender's key."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .common import dscp


def cmd_sync(a: argparse.Namespace) -> None:
    import logging
    from pathlib import Path

    from ..creds import read_token
    from ..services.bier import BierController
    from ..services.intent import load
    from ..services.run import bier_targets, credentials
    from ..services.trees import TreeController
    from ..sync.job import Cloud, SyncJob
    from ..sync.uftp import UftpOptions
    from ..targets.base import TreeTarget

    logging.getLogger("dinet.services.bier").setLevel(logging.ERROR)
    cfg = load(Path(a.intent))
    if cfg.bier is None:
        raise ConfigError(f"{a.intent} has no bier section: model sync needs the BIER domain")
    names = [x.strip() for x in a.to.split(",") if x.strip()]
    missing = [n for n in names if n not in cfg.sync_receivers]
    if missing:
        raise ConfigError(f"no receiver for {', '.join(missing)} in {a.intent} (bier.receivers)")
    opts = UftpOptions(
        port=a.port, pub_group=a.group, rate_mbps=a.rate, cc=a.cc, encrypt=not a.no_encrypt,
        key=Path(a.key) if a.key else None, dscp=a.dscp,
    )  # fmt: skip
    remote = any(n.target == "agent" for n in cfg.nodes.values())  # TLS only matters toward node agents
    if a.tree and remote:
        agents = sorted(name for name, n in cfg.nodes.items() if n.target == "agent")
        raise ConfigError(
            f"--tree: {', '.join(agents)} are node agents, which forward BIER only; trees need TC or BMv2 nodes"
        )
    with bier_targets(cfg, credentials(cfg, a.insecure) if remote else None) as targets:
        ctl = BierController(cfg.bier, targets)
        ctl.install()
        trees = None
        if a.tree:  # the baseline: the job's groups on SR-P2MP trees (node-SID routes written first)
            tree_targets: dict[str, TreeTarget] = {n: t for n, t in targets.items() if isinstance(t, TreeTarget)}
            trees = TreeController(cfg.bier, tree_targets)
            trees.install_routes()
        job = SyncJob(
            ctl, a.bfir, Path(a.file), [Cloud(n, cfg.sync_receivers[n]) for n in names], a.interface,
            read_token(a.token_file), opts, netns=a.netns, retries=a.retries, progress=not a.quiet,
            tls=not a.insecure, ca=a.ca, trees=trees,
        )  # fmt: skip
        report = job.run()
    print(json.dumps(report.to_json(), indent=2) if a.json else report.table())
    if not report.ok:
        raise SystemExit(1)


def cmd_sync_receiver(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..creds import read_token, server_tls
    from ..sync.receiver import SyncReceiver, run
    from ..sync.uftp import UftpOptions, uid

    token = read_token(a.token_file)
    if not token and not a.insecure:
        raise ConfigError("the sync receiver has no token: --token-file or $DINET_TOKEN, or --insecure")
    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
    if not a.tls_cert and not a.insecure:
        raise ConfigError(
            "the sync receiver's status carries the token: serve it over HTTPS (--tls-cert, --tls-key: `dinet "
            "certs issue`), or --insecure"
        )
    opts = UftpOptions(port=a.port, pub_group=a.group)
    interfaces = [x.strip() for x in a.interfaces.split(",") if x.strip()]
    receiver = SyncReceiver(
        Path(a.store), interfaces, uid(a.bfr_id), token, opts, not a.allow_clear,
        Path(a.servers) if a.servers else None, a.any_sender,
    )  # fmt: skip
    run(receiver, a.listen, server_tls(a.tls_cert, a.tls_key) if a.tls_cert else None)


def cmd_sync_pin(a: argparse.Namespace) -> None:
    from pathlib import Path

    from ..sync.uftp import fingerprint, make_key, server_line

    key = Path(a.key)
    fp = make_key(key) if a.new else fingerprint(key)
    print(server_line(a.address, fp))


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    p = sub.add_parser("sync", help="push a model file to GPU clouds over BIER (UFTP, encrypted, verified)")
    p.add_argument("file")
    p.add_argument("--to", required=True, help="the clouds (BFER names of the intent), comma-separated")
    p.add_argument("--intent", required=True, help="the intent file with the BIER domain and bier.receivers")
    p.add_argument("--bfir", required=True, help="the BFIR this repository sends through")
    p.add_argument("--interface", required=True, help="this host's interface toward the BFIR")
    p.add_argument("--netns", help="the network namespace the repository's interface is in")
    p.add_argument("--rate", type=float, default=200.0, help="Mbit/s (fixed rate)")
    p.add_argument("--cc", action="store_true", help="TFMCC congestion control instead of a fixed rate")
    p.add_argument("--no-encrypt", action="store_true", help="send in clear (receivers refuse it by default)")
    p.add_argument(
        "--dscp", type=dscp, default="sync", help="mark what UFTP sends (0-63 or a class; default sync: LE, RFC 8622)"
    )
    p.add_argument("--key", help="this sender's EC private key (PEM; default: an ephemeral one per job)")
    p.add_argument("--port", type=int, default=1044)
    p.add_argument("--group", default="232.4.4.1", help="UFTP's announce group (the receivers' -M; 232/8)")
    p.add_argument("--ca", help="the CA of the receivers' certificates (default: the system's)")
    p.add_argument("--retries", type=int, default=2, help="UFTP restarts for receivers that dropped out")
    p.add_argument("--token-file", help="the receivers' token (default: $DINET_TOKEN)")
    p.add_argument("--insecure", action="store_true", help="node agents and the receivers' status without TLS")
    p.add_argument("--tree", action="store_true", help="send over SR-P2MP trees (the baseline) instead of BIER groups")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_sync)
    p = sub.add_parser("sync-receiver", help="a GPU cloud's model-sync receiver (uftpd and a status endpoint)")
    p.add_argument("--store", required=True, help="the model store (received files land here)")
    p.add_argument("--interfaces", required=True, help="interfaces BIER delivers on, comma-separated")
    p.add_argument("--bfr-id", type=int, required=True, help="this cloud's BFR-id (its UFTP client ID)")
    p.add_argument("--listen", default="0.0.0.0:9444", help="the status endpoint")
    p.add_argument("--port", type=int, default=1044)
    p.add_argument("--group", default="232.4.4.1", help="UFTP's announce group (232/8: pinned senders need it)")
    p.add_argument("--servers", help="the pinned senders (uftpd's server list; `dinet sync-pin` writes a line)")
    p.add_argument("--any-sender", action="store_true", help="take files from any sender (no --servers)")
    p.add_argument("--tls-cert", help="serve the status over HTTPS with this certificate (`dinet certs issue`)")
    p.add_argument("--tls-key", help="its private key (mode 0600)")
    p.add_argument("--allow-clear", action="store_true", help="also accept sessions without encryption")
    p.add_argument("--token-file", help="the token the repository presents (default: $DINET_TOKEN)")
    p.add_argument("--insecure", action="store_true", help="no token, status in clear (tests and labs only)")
    p.set_defaults(fn=cmd_sync_receiver)
    p = sub.add_parser("sync-pin", help="the line of a receiver's --servers file that pins a sender's UFTP key")
    p.add_argument("key", help="the sender's key (PEM, as `dinet sync --key` takes it)")
    p.add_argument("--address", required=True, help="the IPv4 address the sender sends from")
    p.add_argument("--new", action="store_true", help="make the key first (EC prime256v1, mode 0600)")
    p.set_defaults(fn=cmd_sync_pin)
