"""A real Debian ``clickhouse-server`` as a plain child process, plus the store fixtures built on it.

There is no systemd or docker here, and tests run side by side, so each server gets its own
directory (config, data, logs) and its own free loopback ports. ``.ci/run`` starts one for the
whole suite with ``python -m tests.support.clickhouse_server start --dir DIR`` and exports its URL
as ``TRACEMESH_CLICKHOUSE_URL``; without that variable the fixtures start one per test session.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from tests.support.processes import ManagedProcess, free_port, wait_for_port

SERVER_BINARY = "clickhouse-server"
PACKAGE_CONFIG_DIR = Path("/etc/clickhouse-server")
URL_ENV = "TRACEMESH_CLICKHOUSE_URL"
REQUIRE_ENV = "TRACEMESH_REQUIRE_CLICKHOUSE"
PID_FILE = "clickhouse-server.pid"
URL_FILE = "url"


def with_database(server_url: str, database: str) -> str:
    """The same server's URL for another database."""
    return f"{server_url.rpartition('/')[0]}/{database}"


def server_binary() -> str | None:
    """The Debian package puts the server in /usr/sbin, which a non-root PATH may lack."""
    return shutil.which(SERVER_BINARY) or shutil.which(SERVER_BINARY, path="/usr/sbin")


def write_config(directory: Path, tcp_port: int) -> Path:
    """Copy the package's config.xml/users.xml into ``directory`` with every path and port pointed there."""
    directory.mkdir(parents=True, exist_ok=True)
    tree = ElementTree.parse(PACKAGE_CONFIG_DIR / "config.xml")
    root = tree.getroot()
    settings = {
        "tcp_port": str(tcp_port),
        "http_port": str(free_port()),
        "interserver_http_port": str(free_port()),
        "listen_host": "127.0.0.1",
        "path": f"{directory}/data/",
        "tmp_path": f"{directory}/data/tmp/",
        "user_files_path": f"{directory}/data/user_files/",
        "format_schema_path": f"{directory}/data/format_schemas/",
        "users_config": str(directory / "users.xml"),
    }
    for tag, value in settings.items():
        for element in root.findall(tag):
            root.remove(element)
        ElementTree.SubElement(root, tag).text = value
    logger = root.find("logger")
    logger.find("log").text = str(directory / "clickhouse-server.log")
    logger.find("errorlog").text = str(directory / "clickhouse-server.err.log")
    config_path = directory / "config.xml"
    tree.write(config_path)
    shutil.copyfile(PACKAGE_CONFIG_DIR / "users.xml", directory / "users.xml")
    return config_path


class ClickHouseServer:
    """One server in its own directory; ``url`` is the ``clickhouse://`` store URL of its default database."""

    def __init__(self, directory: Path):
        self.directory = Path(directory).resolve()
        self.port = free_port()
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"clickhouse://default:@127.0.0.1:{self.port}/default"

    def start(self, timeout: float = 60.0) -> str:
        binary = server_binary()
        if binary is None:
            raise FileNotFoundError(f"{SERVER_BINARY} is not installed (apt-get install -y clickhouse-server)")
        config_path = write_config(self.directory, self.port)
        self.process = ManagedProcess(
            [binary, f"--config-file={config_path}"], self.directory / "stdout.log", cwd=self.directory
        )
        try:
            wait_for_port(self.port, timeout=timeout, process=self.process.popen)
        except (TimeoutError, RuntimeError) as exc:
            log = self.process.log()[-2000:]
            self.process.stop()
            raise RuntimeError(f"clickhouse-server did not start: {exc}\n{log}") from exc
        return self.url

    def stop(self) -> None:
        """SIGTERM; the server waits up to about 10 s for open client connections to go away."""
        if self.process is not None:
            self.process.stop(timeout=30)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: an outage as sudden as a crash (acknowledged inserts are already on disk)."""
        if self.process is not None:
            self.process.kill9()
            self.process.stop()
            self.process = None


def stop_by_pid_file(directory: Path, timeout: float = 30.0) -> bool:
    pid_path = directory / PID_FILE
    if not pid_path.exists():
        return False
    pid = int(pid_path.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_path.unlink()
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_path.unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.clickhouse_server",
        description="Start or stop a throw-away clickhouse-server on free loopback ports (for .ci/run and local tests).",
    )
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", required=True, type=Path, help="directory for the server's config, data and logs")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    if args.action == "stop":
        stopped = stop_by_pid_file(directory)
        print("stopped" if stopped else "no server running", file=sys.stderr)
        return 0
    server = ClickHouseServer(directory)
    url = server.start()
    (directory / PID_FILE).write_text(str(server.process.popen.pid))
    (directory / URL_FILE).write_text(url)
    print(url)
    return 0


# ---- pytest fixtures (import them into a test module to use them) ----------------------------

try:
    import pytest
except ImportError:  # the __main__ entry point does not need pytest
    pytest = None

if pytest is not None:

    def skip_or_fail_without_server() -> None:
        message = f"{SERVER_BINARY} is not installed"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{message} but {REQUIRE_ENV}=1")
        pytest.skip(message)

    @pytest.fixture(scope="session")
    def clickhouse_server_url(tmp_path_factory):
        """URL of a running server: ``TRACEMESH_CLICKHOUSE_URL`` if set, else one started for this session."""
        if os.environ.get(URL_ENV):
            yield os.environ[URL_ENV]
            return
        if server_binary() is None:
            skip_or_fail_without_server()
        server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse-server"))
        try:
            yield server.start()
        finally:
            server.stop()

    @pytest.fixture
    def private_clickhouse_server(tmp_path):
        """A server of this test's own, for tests that stop it."""
        if server_binary() is None:
            skip_or_fail_without_server()
        server = ClickHouseServer(tmp_path / "clickhouse-server")
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(params=["chdb", "clickhouse"])
    def store_url(request, tmp_path):
        """A store URL for each backend: chDB in a temp dir, or a fresh database on the test server."""
        if request.param == "chdb":
            yield f"chdb://{tmp_path}/chdb"
            return
        from clickhouse_driver import Client

        server_url = request.getfixturevalue("clickhouse_server_url")
        database = f"test_{uuid.uuid4().hex[:12]}"
        client = Client.from_url(with_database(server_url, "default"))
        try:
            yield with_database(server_url, database)
        finally:
            client.execute(f"DROP DATABASE IF EXISTS {database}")
            client.disconnect()


if __name__ == "__main__":
    sys.exit(main())
