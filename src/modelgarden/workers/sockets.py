"""The shared address: one listening socket per process on the same port (``SO_REUSEPORT``),
and the BPF program that keeps new connections off the primary's socket while workers listen.
"""

from __future__ import annotations

import ctypes
import socket
import struct

import structlog

from modelgarden.config import ConfigError

log = structlog.get_logger(__name__)

#: Linux's SO_ATTACH_REUSEPORT_CBPF and the classic BPF opcodes the steering program uses.
_SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_ALU_ADD_K, _BPF_RET_A = 0x20, 0x94, 0x04, 0x16
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # the "random number" ancillary load


def listen_socket(host: str, port: int, *, shared: bool, first: bool = True) -> socket.socket:
    """A listening TCP socket; ``shared`` ones let the other gateway processes bind the same
    address (``SO_REUSEPORT``).

    The ``first`` to share an address tries it without ``SO_REUSEPORT`` beforehand, so that a
    port held by another program (or another gateway) is refused as usual rather than
    quietly split; a relay worker joins its primary's address (``first=False``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if shared and first:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def steer_to_workers(sock: socket.socket, workers: int) -> bool:
    """Hand the new connections of ``sock``'s ``SO_REUSEPORT`` group to its members after the
    first (the primary's), at random: ``1 + random % workers``. An index past the group's
    end (a worker missing) falls back to the kernel's hash over every member. Returns
    whether the kernel took the program (Linux only; elsewhere every process takes its
    share, as without it).
    """
    program = [
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        (_BPF_ALU_MOD_K, 0, 0, workers),
        (_BPF_ALU_ADD_K, 0, 0, 1),
        (_BPF_RET_A, 0, 0, 0),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning("cannot steer connections to the workers", error=str(exc))
        return False
    return True
