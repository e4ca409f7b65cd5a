#!/usr/bin/env bash
# Idempotent install of everything dinet needs on Debian 12/13 or Ubuntu, as root:
# Debian packages (bcc, clang, iproute2, Mininet, traffic tools, UFTP), kernel headers for bcc,
# a mounted bpffs, and a venv (from /usr/bin/python3 with system site-packages, so it sees
# bcc and Mininet) holding the PyPI dependencies. A second run only checks and takes seconds.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
stamp="$venv/.dinet-install"
[ "$(id -u)" = 0 ] || { echo "install: run as root (bcc, XDP and namespaces need it)" >&2; exit 1; }

pkgs=(python3-bpfcc bpfcc-tools clang llvm libbpf-dev bpftool iproute2 iputils-ping tcpdump
      mininet bridge-utils netsniff-ng iperf3 wrk nftables ethtool make gcc python3-venv python3-dev procps uftp curl)
# --test: also what only the test suite needs (a headless browser opens the experiments' HTML reports)
[ "${1:-}" = --test ] && pkgs+=(chromium)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done

kver=$(uname -r)
moddir="/lib/modules/$kver"
need_headers=0
# kconfig.h lives in the -common tree of Debian's split headers: look through both links
[ -e "$moddir/build/include/linux/kconfig.h" ] || [ -e "$moddir/source/include/linux/kconfig.h" ] || need_headers=1
[ -e "$moddir/build/Makefile" ] || need_headers=1

if [ ${#missing[@]} -gt 0 ] || [ $need_headers = 1 ]; then
  echo "install: apt-get update"
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc compiles against /lib/modules/$(uname -r)/build. Prefer the running kernel's own headers;
# a kernel without a package (a VM's custom kernel) gets the distribution's generic headers linked there.
if [ $need_headers = 1 ]; then
  if apt-cache show "linux-headers-$kver" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "linux-headers-$kver" >/dev/null
  else
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-headers-amd64 >/dev/null
    amd64=$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -1)
    common=${amd64%-amd64}-common
    [ -d "$common" ] || common=$amd64
    mkdir -p "$moddir"
    ln -sfn "$amd64" "$moddir/build"
    ln -sfn "$common" "$moddir/source"
    echo "install: no headers for kernel $kver; linked $amd64 and $common under $moddir"
  fi
fi

# Pinned maps live in bpffs; containers and minimal VMs often leave it unmounted.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

want=$(cat "$top/pyproject.toml" "$0" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$venv/bin/python" -c 'import bcc, scapy, dinet' 2>/dev/null; then
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e "$top[test]"
  echo "$want" > "$stamp"
fi
# gRPC code of control/dinet/*.proto, generated with the venv's grpcio-tools (never committed)
"$venv/bin/python" -c 'from dinet import proto; proto.generate()'
# p4runtime-shell pins protobuf < 3.21, which dinet's own gRPC code cannot use: it gets a virtualenv of its
# own (without system site-packages), used by the test that reads back what dinet wrote.
p4sh="$top/.venv-p4sh"
if ! "$p4sh/bin/python" -c 'import p4runtime_sh.shell' 2>/dev/null; then
  /usr/bin/python3 -m venv "$p4sh"
  "$p4sh/bin/python" -m pip install -q "p4runtime-shell==0.0.6"
fi
echo "install: ready ($venv)"
