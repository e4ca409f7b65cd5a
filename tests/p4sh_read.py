"""Run by the p4runtime-shell virtualenv (.venv-p4sh): connect to a switch as another controller and print,
as JSON, the entries of the tables named on the command line (match values and action parameters as ints)."""

import json
import sys

import p4runtime_sh.shell as sh


def main() -> None:
    addr, tables = sys.argv[1], sys.argv[2:]
    sh.setup(device_id=0, grpc_addr=addr, election_id=(0, 2), config=None, verbose=False)
    try:
        out = {}
        for table in tables:
            rows = []
            for te in sh.TableEntry(table).read():
                msg = te.msg()
                rows.append(
                    {
                        "match": sorted(int.from_bytes(m.exact.value, "big") for m in msg.match),
                        "params": [int.from_bytes(p.value, "big") for p in msg.action.action.params],
                    }
                )
            out[table] = sorted(rows, key=lambda r: r["match"])
        print(json.dumps(out))
    finally:
        sh.teardown()


if __name__ == "__main__":
    main()
