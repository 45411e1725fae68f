"""Where `coulisse serve` listens: the address and port checked before the models load (a port in use said in one
line), `--host ::` bound for IPv6 and IPv4 alike, the open-file limit raised to fit --max-connections, and whether
a host answers this machine alone (a server without --api-key on another one is warned about). `coulisse studio`
checks its address with the same functions.
"""

from __future__ import annotations

import errno
import logging

import click

log = logging.getLogger("coulisse.interfaces.server.command")  # the command's, as tei_env.py's: `serve`'s lines


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1): only this machine is answered. A name is not
    resolved (it could point anywhere)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, port: int) -> None:
    """Bind host:port once and let it go: a port in use, or one this user may not take, is refused in one line
    before the models load, instead of in uvicorn's traceback after they did. uvicorn binds it again (with
    SO_REUSEADDR, as here); another process can take the port in between, which uvicorn then reports."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise click.ClickException(f"cannot listen on {host}: {getattr(e, 'strerror', None) or e}; pass --host as "
                                   "an address or name of this machine (127.0.0.1, 0.0.0.0...).") from None
    with socket.socket(family, kind, proto) as probe:
        if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # Windows: SO_REUSEADDR there binds a port in use, and uvicorn
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # binds without it (audit 44)
        else:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            hint = {errno.EADDRINUSE: "another process listens there: pass another --port, or stop it",
                    errno.EACCES: "ports below 1024 need privileges: pass a --port above 1023",
                    errno.EADDRNOTAVAIL: "no interface of this machine has that address: check --host"}
            shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as URLs write it
            raise click.ClickException(f"cannot listen on {shown}:{port}: {e.strerror or e}; "
                                       f"{hint.get(e.errno, 'check --host and --port')}.") from None


def dual_stack(host: str, port: int) -> list | None:
    """`--host ::` as TEI (and most servers on Linux) take it: every IPv6 and IPv4 address. asyncio binds "::"
    IPv6-only, so IPv4 clients, an IPv4 cluster's probes among them, were refused (audit 44): the socket is made
    here, IPV6_V6ONLY off, and handed to uvicorn. None for any other host (uvicorn binds it)."""
    import socket

    if host != "::" or not socket.has_ipv6:  # (brackets, `[::]`, are taken off before)
        return None
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
        sock.set_inheritable(True)
    except OSError as e:
        sock.close()
        raise click.ClickException(f"cannot listen on [::]:{port}: {e.strerror or e}; pass --host 0.0.0.0 for "
                                   "IPv4 alone.") from None
    return [sock]


def allow_open_files(max_connections: int) -> None:
    """Raise the soft limit on open files to fit --max-connections (plus the model's files and logs):
    past it, accept() fails and the connections beyond never reach the cap's 503."""
    try:
        import resource
    except ImportError:  # Windows
        return
    needed = max_connections + 128
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
        if target < needed:
            log.warning("open files are limited to %d (ulimit -n): fewer than --max-connections %d needs",
                        target, max_connections)
