"""A real ``tracemesh collector`` subprocess on free loopback ports, and how tests talk to it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ManagedProcess, free_port, tracemesh_command, wait_for_port


@dataclass
class RunningCollector:
    store_url: str
    spool_dir: Path
    log_path: Path
    extra_args: tuple[str, ...] = ()
    grpc_port: int = field(default_factory=free_port)
    otlp_http_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    control_port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}/v1/traces"

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> RunningCollector:
        args = tracemesh_command(
            "collector",
            "--otlp-grpc", self.grpc_address,
            "--otlp-http", f"127.0.0.1:{self.otlp_http_port}",
            "--http", f"127.0.0.1:{self.api_port}",
            "--control", self.control_address,
            "--store", self.store_url,
            "--spool", str(self.spool_dir),
            "--batch-delay", "0.2",
            *self.extra_args,
        )
        self.process = ManagedProcess(args, self.log_path)
        try:
            for port in (self.grpc_port, self.otlp_http_port, self.api_port):
                wait_for_port(port, timeout=60, process=self.process.popen)
        except (TimeoutError, RuntimeError) as exc:
            self.process.stop()
            raise RuntimeError(f"collector did not start: {exc}\n{self.process.log()[-3000:]}") from exc
        return self

    def stop(self) -> int | None:
        code = self.process.stop(timeout=30) if self.process else None
        self.process = None
        return code

    def kill9(self) -> None:
        self.process.kill9()
        self.process = None

    def get_json(self, path: str) -> dict:
        with urllib.request.urlopen(self.api_url + path, timeout=10) as reply:
            return json.load(reply)

    def ready(self) -> dict:
        return self.get_json("/ready")

    def wait_inserted(self, rows: int, timeout: float = 60.0) -> dict:
        """Wait until this run's writer inserted ``rows`` spans and the spool is empty."""
        deadline = time.monotonic() + timeout
        state = {}
        while time.monotonic() < deadline:
            state = self.ready()
            if state["inserted_rows"] >= rows and state["spool_bytes"] == 0:
                return state
            time.sleep(0.1)
        raise TimeoutError(f"collector inserted {state.get('inserted_rows')} of {rows} spans: {state}")

    def trace(self, trace_id: str) -> dict:
        return self.get_json(f"/api/v1/traces/{trace_id}")

    def post(self, url: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


def collector_for(tmp_path: Path, store_url: str | None = None, *extra_args: str) -> RunningCollector:
    """A not yet started collector with its store (chDB by default), spool and log under ``tmp_path``."""
    return RunningCollector(
        store_url=store_url or f"chdb://{tmp_path}/chdb",
        spool_dir=tmp_path / "spool",
        log_path=tmp_path / "collector.log",
        extra_args=extra_args,
    )
