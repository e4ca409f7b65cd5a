"""The few bpf(2) commands bcc 0.26's Python class does not wrap: BPF_PROG_TEST_RUN, BPF_OBJ_GET and
BPF_OBJ_GET_INFO_BY_FD, called through ctypes. Layouts follow include/uapi/linux/bpf.h."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

from ..errors import DataPlaneError

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_SYS_BPF = 321  # x86_64
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
XDP_ACTIONS = {0: "aborted", 1: "drop", 2: "pass", 3: "tx", 4: "redirect"}


class _TestRunAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _ObjGetAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("path_fd", ctypes.c_int32),
        ("_pad", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


@dataclass(frozen=True)
class RunResult:
    action: int
    data: bytes
    duration_ns: int  # the kernel's mean time per repeat

    @property
    def action_name(self) -> str:
        return XDP_ACTIONS.get(self.action, str(self.action))


def test_run(prog_fd: int, data: bytes, repeat: int = 1) -> RunResult:
    """Runs a loaded XDP program on one packet (BPF_PROG_TEST_RUN) and returns its verdict and output."""
    buf_in = ctypes.create_string_buffer(bytes(data), len(data))
    out_size = len(data) + 512  # room for headers the program pushes
    buf_out = ctypes.create_string_buffer(out_size)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(data),
        data_size_out=out_size,
        data_in=ctypes.addressof(buf_in),
        data_out=ctypes.addressof(buf_out),
        repeat=repeat,
    )
    try:
        _bpf(BPF_PROG_TEST_RUN, attr)
    except OSError as e:
        raise DataPlaneError(f"BPF_PROG_TEST_RUN on program fd {prog_fd} failed: {e.strerror}") from e
    return RunResult(attr.retval, buf_out.raw[: attr.data_size_out], attr.duration)


class _XdpMd(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def run_live(prog_fd: int, frame: bytes, ifindex: int, repeat: int, batch_size: int = 64) -> None:
    """Runs an XDP program in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES): its XDP_TX really sends,
    out of `ifindex` (an interface of the calling thread's namespace). A generator, not a test."""
    buf_in = ctypes.create_string_buffer(bytes(frame), len(frame))
    ctx = _XdpMd(data=0, data_end=len(frame), ingress_ifindex=ifindex)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(frame),
        data_in=ctypes.addressof(buf_in),
        repeat=repeat,
        ctx_size_in=ctypes.sizeof(ctx),
        ctx_in=ctypes.addressof(ctx),
        flags=BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size=batch_size,
    )
    try:
        _bpf(BPF_PROG_TEST_RUN, attr)
    except OSError as e:
        raise DataPlaneError(f"live BPF_PROG_RUN on program fd {prog_fd} failed: {e.strerror}") from e


@dataclass(frozen=True)
class MapInfo:
    type: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


def pinned_map_info(path: str) -> MapInfo | None:
    """The shape of the map pinned at `path`, or None if nothing is pinned there."""
    if not os.path.exists(path):
        return None
    p = ctypes.create_string_buffer(path.encode())
    try:
        fd = _bpf(BPF_OBJ_GET, _ObjGetAttr(pathname=ctypes.addressof(p)))
    except OSError as e:
        raise DataPlaneError(f"cannot open the pinned map {path}: {e.strerror}") from e
    try:
        info = _MapInfo()
        _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)))
        return MapInfo(info.type, info.key_size, info.value_size, info.max_entries, info.name.decode())
    finally:
        os.close(fd)
