"""A pseudo-terminal pair: a simulated device on the master side, a driver on the serial side.

Lets tests and `vpp sim ... --pty` run a serial protocol end to end through a real tty (termios,
pyserial) without hardware.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from dataclasses import dataclass

__all__ = ["PtyBridge", "PtyPair", "open_pty"]


@dataclass
class PtyPair:
    """master_fd plays the device; slave_path is what the driver opens as serial://<slave_path>."""

    master_fd: int
    slave_fd: int
    slave_path: str

    def close(self) -> None:
        """Close both ends; idempotent."""
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master_fd = self.slave_fd = -1


def open_pty() -> PtyPair:
    """A raw pty pair (no echo, no line discipline), so binary frames pass unchanged."""
    master, slave = os.openpty()
    for fd in (master, slave):
        tty.setraw(fd, termios.TCSANOW)
    return PtyPair(master, slave, os.ttyname(slave))


class PtyBridge:
    """Two raw ptys with their master sides joined: a null-modem cable between two serial ports.

    For peers that both open a device path (e.g. a pymodbus serial server and our serial
    client). Pumps bytes on the running event loop; close() stops it.
    """

    def __init__(self) -> None:
        self.a = open_pty()
        self.b = open_pty()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def paths(self) -> tuple[str, str]:
        """The two serial device paths."""
        return self.a.slave_path, self.b.slave_path

    def start(self) -> PtyBridge:
        """Begin pumping (call with a running loop)."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.a.master_fd, self._pump, self.a.master_fd, self.b.master_fd)
        self._loop.add_reader(self.b.master_fd, self._pump, self.b.master_fd, self.a.master_fd)
        return self

    @staticmethod
    def _pump(src: int, dst: int) -> None:
        with contextlib.suppress(OSError):  # the other side closed: bytes have nowhere to go
            os.write(dst, os.read(src, 4096))

    def close(self) -> None:
        """Stop pumping and close both ptys; idempotent."""
        if self._loop is not None:
            for fd in (self.a.master_fd, self.b.master_fd):
                if fd >= 0:
                    self._loop.remove_reader(fd)
            self._loop = None
        self.a.close()
        self.b.close()
