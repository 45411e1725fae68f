"""Raw-socket helpers of the server tests that watch what the HTTP layer does to a connection."""

from __future__ import annotations

import socket


def wait_closed(sock: socket.socket, timeout: float = 5) -> bool:
    """Whether the server closes (or resets) `sock` within `timeout` seconds, whatever it sends before."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True
