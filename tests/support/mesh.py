"""Meshes of real processes for the HTTP proxy tests: upstream apps and ``tracemesh proxy`` sidecars on
free loopback ports, a raw HTTP/1.1 client that shows exactly what went over the wire, and readers for a
sidecar's /metrics. Everything a test starts is registered with a ``Mesh`` and stopped by ``close()``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ManagedProcess, free_port, tracemesh_command, wait_for_port


@dataclass
class App:
    name: str
    port: int
    process: ManagedProcess

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://{self.address}/stats", timeout=5) as reply:
            return json.load(reply)

    def calls(self) -> int:
        return sum(self.stats()["calls"].values())


@dataclass
class Sidecar:
    service: str
    inbound: int | None
    outbound: int | None
    admin: int
    process: ManagedProcess

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as reply:
            return reply.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            match = re.match(r"([a-zA-Z_:]+)(\{[^}]*\})? ([0-9.e+-]+|NaN)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(key) == value for key, value in labels.items()):
                total += float(match.group(3))
        return total

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


class Mesh:
    def __init__(self, directory: Path):
        self.directory = directory
        self.processes: list[ManagedProcess] = []

    def app(self, name: str, next_service: str | None = None, outbound: int | None = None, mode: str = "ok") -> App:
        port = free_port()
        args = [sys.executable, "-m", "tests.apps.upstream", "--port", str(port), "--name", name, "--mode", mode]
        if next_service:
            args += ["--next", next_service, "--outbound", f"127.0.0.1:{outbound}"]
        process = self._start(args, f"app-{name}-{port}", port)
        return App(name, port, process)

    def sidecar(
        self,
        service: str,
        app: App | None = None,
        endpoints: Path | None = None,
        collector: str | None = None,
        outbound: bool = True,
        extra: tuple[str, ...] = (),
        inbound_port: int | None = None,
        outbound_port: int | None = None,
    ) -> Sidecar:
        """``inbound_port`` / ``outbound_port`` when others must know them before the sidecar starts."""
        inbound_port = (inbound_port or free_port()) if app else None
        outbound_port = (outbound_port or free_port()) if outbound else None
        admin_port = free_port()
        args = ["--service", service, "--admin", f"127.0.0.1:{admin_port}", *extra]
        if app:
            args += ["--inbound", f"127.0.0.1:{inbound_port}", "--app", app.address]
        if outbound_port:
            args += ["--outbound", f"127.0.0.1:{outbound_port}"]
        if endpoints:
            args += ["--endpoints", str(endpoints)]
        if collector:
            args += ["--collector", collector]
        process = self._start(tracemesh_command("proxy", *args), f"proxy-{service}-{admin_port}", admin_port)
        for port in (inbound_port, outbound_port):
            if port:
                wait_for_port(port, process=process.popen)
        return Sidecar(service, inbound_port, outbound_port, admin_port, process)

    def endpoints(self, services: dict[str, list[str]], name: str = "endpoints.yaml") -> Path:
        path = self.directory / name
        path.write_text("".join(f"{service}: {json.dumps(addresses)}\n" for service, addresses in services.items()))
        return path

    def _start(self, args: list[str], name: str, port: int) -> ManagedProcess:
        process = ManagedProcess(args, self.directory / f"{name}.log")
        self.processes.append(process)
        try:
            wait_for_port(port, timeout=30, process=process.popen)
        except (TimeoutError, RuntimeError) as error:
            raise RuntimeError(f"{name} did not start: {error}\n{process.log()[-3000:]}") from error
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=10)


class RawResponse:
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, head: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.head = head  # the status line and header block exactly as received

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class RawClient:
    """One HTTP/1.1 connection driven byte by byte, so tests see framing exactly as the proxy wrote it."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None) -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        return self.read_response(head_request=method == "HEAD")

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the proxy")
        self.buffer += data

    def read_response(self, head_request: bool = False) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        _, status, reason = (status_line.split(" ", 2) + [""])[:3]
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
        response = RawResponse(int(status), reason, headers, b"", head)
        if head_request or response.status in (204, 304) or 100 <= response.status < 200:
            return response
        length = response.header("content-length")
        if length is not None:
            while len(self.buffer) < int(length):
                self._fill()
            response.body = bytes(self.buffer[: int(length)])
            del self.buffer[: int(length)]
        elif (response.header("transfer-encoding") or "").lower() == "chunked":
            response.body = self._read_chunked()
        else:
            while True:
                try:
                    self._fill()
                except ConnectionError:
                    break
            response.body = bytes(self.buffer)
            self.buffer.clear()
        return response

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in self.buffer:
                self._fill()
            end = self.buffer.index(b"\r\n")
            size = int(bytes(self.buffer[:end]).split(b";")[0], 16)
            del self.buffer[: end + 2]
            while len(self.buffer) < size + 2:
                self._fill()
            body += self.buffer[:size]
            del self.buffer[: size + 2]
            if size == 0:
                return bytes(body)

    def closed_by_peer(self, wait: float = 2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
