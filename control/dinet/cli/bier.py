"""`dinet` commands of BIER forwarding on this host (TC): BIFTs, BFIR classification, counters."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .common import leaf, table


def _bier(a: argparse.Namespace) -> Any:
    from ..targets.tc import BierNode

    return BierNode(a.node)


def _ids(text: str) -> list[int]:
    """BFR-ids: "1,2,5-8"."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            raise ConfigError(f"BFR-ids are numbers and ranges (1,2,5-8), not {text!r}") from None
    return out


def _bsl_code(bits: int) -> int:
    from ..rfc8296 import BSL_CODE

    if bits not in BSL_CODE:
        raise ConfigError(f"BSL must be one of {sorted(BSL_CODE)} bits, not {bits}")
    return BSL_CODE[bits]


def cmd_bier_attach(a: argparse.Namespace) -> None:
    with _bier(a) as n:
        n.attach(a.dev, a.netns)
        print(f"tc_bier attached to {a.dev} ingress (node {a.node})")


def cmd_bier_detach(a: argparse.Namespace) -> None:
    from ..targets.bcc_program import BccProgram

    BccProgram.detach_tc(a.dev, a.netns)
    BccProgram.detach(a.dev, a.netns)
    print(f"BIER programs (TC and XDP) removed from {a.dev}")


def cmd_bier_destroy(a: argparse.Namespace) -> None:
    _bier(a).destroy()
    print(f"node {a.node}: pinned BIER maps removed")


def cmd_bier_bift_set(a: argparse.Namespace) -> None:
    from ..rfc8296 import bift_id, bitstring_mask
    from ..targets import netns
    from ..targets.tc import BiftNeighbor

    code = _bsl_code(a.bsl)
    bits = a.bsl
    bid = bift_id(code, a.si, a.sd)
    nbrs = []
    for spec in a.nbr:
        try:
            ifname, dmac, ids = spec.split(",", 2)
        except ValueError:
            raise ConfigError(f"--nbr is IFNAME,DMAC,BFR-IDS (eth1,02:00:00:00:00:02,1-4), not {spec!r}") from None
        nbrs.append(
            BiftNeighbor(
                netns.ifindex(ifname, a.netns),
                netns.mac_of(ifname, a.netns),
                dmac,
                bitstring_mask(_ids(ids), bits, a.si),
            )
        )
    with _bier(a) as n:
        n.set_bift(bid, bitstring_mask(_ids(a.local or ""), bits, a.si), nbrs, a.netns)
        print(f"BIFT-id {bid:#07x} (BSL {bits}, SD {a.sd}, SI {a.si}): {len(nbrs)} neighbours")


def cmd_bier_bift_show(a: argparse.Namespace) -> None:
    from ..rfc8296 import BSL_BITS, bitstring_ids, split_bift_id

    with _bier(a) as n:
        bifts = n.bifts()
    rows, data = [], []
    for bid, e in bifts.items():
        code, sd, si = split_bift_id(bid)
        nbytes = BSL_BITS[code] // 8

        def ids(mask: int, nbytes: int = nbytes, si: int = si) -> list[int]:
            return bitstring_ids(mask.to_bytes(nbytes, "big"), si)

        data.append(
            {
                "bift_id": bid,
                "bsl": BSL_BITS[code],
                "sd": sd,
                "si": si,
                "local": ids(e.local),
                "neighbors": [{"ifindex": x.ifindex, "dmac": x.dmac, "bfr_ids": ids(x.fbm)} for x in e.neighbors],
            }
        )
        rows.append([f"{bid:#07x}", BSL_BITS[code], si, "local", "-", ids(e.local)])
        rows += [["", "", "", x.ifindex, x.dmac, ids(x.fbm)] for x in e.neighbors]
    if a.json:
        print(json.dumps(data, indent=2))
    else:
        print(table(rows, ["bift-id", "bsl", "si", "ifindex", "neighbour mac", "bfr-ids (F-BM)"]))


def cmd_bier_bift_del(a: argparse.Namespace) -> None:
    from ..rfc8296 import bift_id

    with _bier(a) as n:
        n.remove_bift(bift_id(_bsl_code(a.bsl), a.si, a.sd))
        print("removed")


def _match(a: argparse.Namespace) -> Any:
    from ..targets.tc import BfirMatch

    return BfirMatch(a.dst, a.src, a.udp_port or 0)


def cmd_bier_group_add(a: argparse.Namespace) -> None:
    from ..policy.bift import bfir_sets

    code = _bsl_code(a.bsl)
    sets = bfir_sets(_ids(a.to), code, a.sd)
    with _bier(a) as n:
        n.set_bfir(_match(a), a.bfir_id, code, sets)
        print(f"{_match(a)} -> BFR-ids {a.to} in {len(sets)} set(s)")


def cmd_bier_group_del(a: argparse.Namespace) -> None:
    with _bier(a) as n:
        n.remove_bfir(_match(a))
        print("removed")


def cmd_bier_group_list(a: argparse.Namespace) -> None:
    from ..rfc8296 import split_bift_id

    with _bier(a) as n:
        entries = n.bfir_entries()
    out = []
    for m, sets in entries.items():
        for bid, mask in sets.items():
            out.append(
                {
                    "dst": str(m.dst),
                    "src": str(m.src) if m.src else None,
                    "udp_port": m.udp_port,
                    "bift_id": bid,
                    "si": split_bift_id(bid)[2],
                    "bitmask": hex(mask),
                }
            )
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(table([list(map(str, r.values())) for r in out], ["dst", "src", "udp port", "bift-id", "si", "bits"]))


def cmd_bier_stats(a: argparse.Namespace) -> None:
    with _bier(a) as n:
        c, tx = n.counters(), n.tx_copies()
    if a.json:
        print(json.dumps({"counters": c, "tx_copies_by_ifindex": tx}, indent=2))
    else:
        print(table([[k, v] for k, v in c.items()], ["counter", "packets"]))
        print()
        print(table([[k, v] for k, v in sorted(tx.items())], ["egress ifindex", "copies"]))


def register(sub: Any) -> None:
    """Adds this group's commands to `dinet`'s subcommands."""
    bier = sub.add_parser("bier", help="BIER forwarding (TC)").add_subparsers(dest="sub", required=True)
    p = leaf(bier, "attach", cmd_bier_attach, "load tc_bier (maps pinned) and attach it at ingress")
    p.add_argument("--dev", required=True)
    p.add_argument("--netns")
    p = leaf(bier, "detach", cmd_bier_detach, "remove the interface's clsact qdisc")
    p.add_argument("--dev", required=True)
    p.add_argument("--netns")
    leaf(bier, "destroy", cmd_bier_destroy, "unpin the node's BIER maps")
    bift = bier.add_parser("bift", help="this BFR's BIFT").add_subparsers(dest="sub2", required=True)
    leaf(bift, "show", cmd_bier_bift_show, "entries per BIFT-id").add_argument("--json", action="store_true")
    for name, fn in (("set", cmd_bier_bift_set), ("del", cmd_bier_bift_del)):
        p = leaf(bift, name, fn, f"{name} the entry of one (BSL, SD, SI)")
        p.add_argument("--bsl", type=int, default=64, help="bits: 64, 128 or 256")
        p.add_argument("--si", type=int, default=0)
        p.add_argument("--sd", type=int, default=0)
        if name == "set":
            p.add_argument("--local", help="this BFR's own BFR-id(s)")
            p.add_argument("--nbr", action="append", default=[], help="IFNAME,DMAC,BFR-IDS (repeatable)")
            p.add_argument("--netns", help="namespace of the interfaces")
    grp = bier.add_parser("group", help="BFIR classification").add_subparsers(dest="sub2", required=True)
    for name, fn in (("add", cmd_bier_group_add), ("del", cmd_bier_group_del)):
        p = leaf(grp, name, fn, f"{name} traffic the BFIR encapsulates")
        p.add_argument("dst", help="group or model-sync destination address")
        p.add_argument("--src", help="source, for an (S,G) entry")
        p.add_argument("--udp-port", type=int, help="UDP destination port, for model sync")
        if name == "add":
            p.add_argument("--to", required=True, help="BFR-ids to reach: 1,2,5-8")
            p.add_argument("--bfir-id", type=int, required=True)
            p.add_argument("--bsl", type=int, default=64)
            p.add_argument("--sd", type=int, default=0)
    leaf(grp, "list", cmd_bier_group_list, "BFIR entries").add_argument("--json", action="store_true")
    leaf(bier, "stats", cmd_bier_stats, "BIER counters").add_argument("--json", action="store_true")
