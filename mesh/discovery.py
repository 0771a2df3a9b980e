"""Service discovery from a watched file: service name -> endpoint addresses, kept current while running.

The file (TOML or YAML, by extension) maps each service to a list of addresses, each "host:port" or a
table/mapping with an ``address`` key::

    payments = ["127.0.0.1:4101", "payments-2.internal:4101"]     # TOML
    ledger = [{ address = "[::1]:4201" }]

It is polled for changes (mtime, size, inode: editors that replace the file are seen too) and host names
are resolved, then re-resolved periodically, because a name's addresses change without the file changing.
When a host has both IPv4 and IPv6 addresses only the IPv4 ones are used (sidecars listen on IPv4
loopback; dialing an address nobody listens on would only feed failure accrual).

A broken file or a failed lookup is logged once and the last good state is kept: a typo in the file or a
DNS hiccup must not take every destination away.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import tomllib
from pathlib import Path

import yaml

from mesh.destination import EndpointsListener, EndpointsListeners

log = logging.getLogger("tracemesh.discovery")


class EndpointsFileError(ValueError):
    """The endpoints file cannot be used; the message names the file and the problem."""


def split_address(address: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError naming the problem."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: write IPv6 addresses as [address]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{address!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def join_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_endpoints(text: str, suffix: str, source: str) -> dict[str, tuple[str, ...]]:
    """Parse endpoints file content; ``suffix`` (".toml", ".yaml", ".yml") picks the format."""
    try:
        if suffix == ".toml":
            document = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            document = yaml.safe_load(text)
        else:
            raise EndpointsFileError(f"{source}: endpoints file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise EndpointsFileError(f"{source}: not valid {suffix[1:].upper()}: {error}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise EndpointsFileError(f"{source}: expected a mapping of service name to a list of addresses")
    services: dict[str, tuple[str, ...]] = {}
    for service, entries in document.items():
        if not isinstance(service, str) or not service:
            raise EndpointsFileError(f"{source}: service name {service!r} must be a non-empty string")
        if not isinstance(entries, list):
            raise EndpointsFileError(f"{source}: service {service!r}: expected a list of addresses")
        addresses = []
        for entry in entries:
            if isinstance(entry, dict):
                if set(entry) != {"address"}:
                    raise EndpointsFileError(f"{source}: service {service!r}: entries take only an 'address' key")
                entry = entry["address"]
            if not isinstance(entry, str):
                raise EndpointsFileError(f"{source}: service {service!r}: address {entry!r} must be a string")
            try:
                split_address(entry)
            except ValueError as error:
                raise EndpointsFileError(f"{source}: service {service!r}: {error}") from None
            addresses.append(entry)
        services[service] = tuple(dict.fromkeys(addresses))
    return services


def load_endpoints_file(path: Path) -> dict[str, tuple[str, ...]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EndpointsFileError(f"{path}: cannot read endpoints file: {error}") from None
    return parse_endpoints(text, path.suffix.lower(), str(path))


class EndpointsFile:
    """Discovery backed by a file; ``await load()`` once at start, then run ``run()`` as a task."""

    def __init__(self, path: str | os.PathLike, poll_s: float = 1.0, resolve_every_s: float = 10.0):
        self.path = Path(path)
        self.poll_s = poll_s
        self.resolve_every_s = resolve_every_s
        self._file_state: tuple[int, int, int] | None = None
        self._services: dict[str, tuple[str, ...]] = {}  # as written in the file
        self._hosts: dict[str, tuple[str, ...]] = {}  # host name -> resolved IPs (last good)
        self._resolved: dict[str, tuple[str, ...]] = {}  # service -> "ip:port", what resolve() answers
        self._resolved_at = float("-inf")
        self._listeners = EndpointsListeners(log)
        self._file_error: str | None = None  # last logged, so a broken file is reported once
        self._failing_hosts: set[str] = set()

    def subscribe(self, listener: EndpointsListener) -> None:
        """Call ``listener(service, addresses)`` whenever a service's resolved addresses change."""
        self._listeners.append(listener)

    def has(self, service: str) -> bool:
        return service in self._services

    def resolve(self, service: str) -> tuple[str, ...]:
        return self._resolved.get(service, ())

    async def load(self) -> None:
        """First load: raises EndpointsFileError when the file is missing or broken."""
        self._read_file(self._stat())
        await self._resolve_all()

    async def run(self) -> None:
        """Watch the file and re-resolve names until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.poll_s)

    async def refresh(self) -> None:
        """Reload the file if it changed and re-resolve names if due; errors are logged, state is kept."""
        changed = False
        try:
            state = self._stat()
            if state != self._file_state:
                self._read_file(state)
                changed = True
        except EndpointsFileError as error:
            if str(error) != self._file_error:
                log.error("%s; keeping the last good endpoints", error)
                self._file_error = str(error)
        if changed or asyncio.get_running_loop().time() - self._resolved_at >= self.resolve_every_s:
            await self._resolve_all()

    def _stat(self) -> tuple[int, int, int]:
        try:
            stat = self.path.stat()
        except OSError as error:
            raise EndpointsFileError(f"{self.path}: cannot read endpoints file: {error.strerror}") from None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _read_file(self, state: tuple[int, int, int]) -> None:
        services = load_endpoints_file(self.path)
        self._file_state = state
        self._services = services
        if self._file_error is not None:
            log.info("endpoints file %s is valid again (%d services)", self.path, len(services))
            self._file_error = None

    async def _resolve_all(self) -> None:
        loop = asyncio.get_running_loop()
        self._resolved_at = loop.time()
        names = {host for addresses in self._services.values() for host, _ in map(split_address, addresses)}
        names = [host for host in names if not _is_ip(host)]
        results = await asyncio.gather(*(self._lookup(loop, host) for host in names))
        self._hosts = dict(zip(names, results))
        resolved: dict[str, tuple[str, ...]] = {}
        for service, addresses in self._services.items():
            endpoints = []
            for address in addresses:
                host, port = split_address(address)
                ips = (host,) if _is_ip(host) else self._hosts[host]
                endpoints.extend(join_address(ip, port) for ip in ips)
            resolved[service] = tuple(dict.fromkeys(endpoints))
        previous, self._resolved = self._resolved, resolved
        for service in [*resolved, *(gone for gone in previous if gone not in resolved)]:
            if previous.get(service) != resolved.get(service):
                self._listeners.notify(service, resolved.get(service, ()))

    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str) -> tuple[str, ...]:
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:  # UnicodeError: not a valid (IDNA) host name
            if host not in self._failing_hosts:
                log.warning("%s: cannot resolve %r (%s); keeping its last addresses", self.path, host, error)
                self._failing_hosts.add(host)
            return self._hosts.get(host, ())
        self._failing_hosts.discard(host)
        ipv4 = [info[4][0] for info in infos if info[0] == socket.AF_INET]
        ips = ipv4 or [info[4][0] for info in infos if info[0] == socket.AF_INET6]
        return tuple(dict.fromkeys(ips))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
