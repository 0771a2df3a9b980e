"""Endpoints file discovery: TOML/YAML parsing, live reload on change, last good state on a broken file, DNS."""

import asyncio
import time

import pytest

from mesh.discovery import EndpointsFile, EndpointsFileError, load_endpoints_file, parse_endpoints, split_address


def test_toml_lists_and_address_tables():
    services = parse_endpoints(
        'payments = ["127.0.0.1:4101", "127.0.0.1:4102", "127.0.0.1:4101"]\n'
        'ledger = [{ address = "[::1]:4201" }]\n'
        "idle = []\n",
        ".toml",
        "test.toml",
    )
    assert services == {"payments": ("127.0.0.1:4101", "127.0.0.1:4102"), "ledger": ("[::1]:4201",), "idle": ()}


def test_yaml_is_accepted_too():
    services = parse_endpoints("payments:\n  - localhost:4101\n  - address: 10.0.0.2:4101\n", ".yaml", "x.yaml")
    assert services == {"payments": ("localhost:4101", "10.0.0.2:4101")}
    assert parse_endpoints("", ".yml", "empty.yml") == {}


@pytest.mark.parametrize(
    "text, suffix, problem",
    [
        ("payments = [", ".toml", "not valid TOML"),
        ("payments: [a", ".yaml", "not valid YAML"),
        ('payments = "127.0.0.1:1"', ".toml", "expected a list"),
        ('payments = ["127.0.0.1"]', ".toml", "not host:port"),
        ('payments = ["127.0.0.1:99999"]', ".toml", "port must be"),
        ('payments = ["::1:80"]', ".toml", "[address]:port"),
        ('payments = [{ address = "a:1", weight = 2 }]', ".toml", "only an 'address' key"),
        ("payments = [5]", ".toml", "must be a string"),
        ("- a:1\n", ".yaml", "expected a mapping"),
        ("payments = []", ".json", "must end in"),
    ],
)
def test_bad_files_are_rejected_naming_the_problem(text, suffix, problem):
    with pytest.raises(EndpointsFileError) as error:
        parse_endpoints(text, suffix, "endpoints" + suffix)
    assert problem in str(error.value)
    assert "endpoints" + suffix in str(error.value)


def test_split_address():
    assert split_address("payments:80") == ("payments", 80)
    assert split_address("[::1]:4201") == ("::1", 4201)


def test_missing_file_is_a_clear_error_at_start(tmp_path):
    with pytest.raises(EndpointsFileError, match="cannot read"):
        load_endpoints_file(tmp_path / "absent.toml")
    with pytest.raises(EndpointsFileError, match="cannot read"):
        asyncio.run(EndpointsFile(tmp_path / "absent.toml").load())


def test_names_are_resolved_ip_literals_kept_unknown_names_skipped(tmp_path):
    path = tmp_path / "endpoints.toml"
    path.write_text('payments = ["localhost:4101", "[::1]:4102", "no-such-host.invalid:1", "a..b:2"]\n')

    async def scenario():
        endpoints = EndpointsFile(path)
        await endpoints.load()
        return endpoints

    endpoints = asyncio.run(scenario())
    assert endpoints.resolve("payments") == ("127.0.0.1:4101", "[::1]:4102")
    assert endpoints.has("payments") and not endpoints.has("ledger")
    assert endpoints.resolve("ledger") == ()


async def wait_until(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good_state(tmp_path, caplog):
    path = tmp_path / "endpoints.yaml"
    path.write_text("payments: [127.0.0.1:4101]\nledger: [127.0.0.1:4201]\n")
    changes = []

    async def scenario():
        endpoints = EndpointsFile(path, poll_s=0.05, resolve_every_s=0.05)  # re-resolving must not notify
        endpoints.subscribe(lambda service, addresses: changes.append((service, addresses)))
        await endpoints.load()
        watcher = asyncio.create_task(endpoints.run())
        try:
            path.write_text("payments: [127.0.0.1:4101, 127.0.0.1:4102]\nledger: [127.0.0.1:4201]\n")
            await wait_until(lambda: endpoints.resolve("payments") == ("127.0.0.1:4101", "127.0.0.1:4102"))

            path.write_text("payments: [127.0.0.1:4101\n")  # broken mid-edit
            await wait_until(lambda: "not valid YAML" in caplog.text)
            await asyncio.sleep(0.2)  # several more polls
            assert endpoints.resolve("payments") == ("127.0.0.1:4101", "127.0.0.1:4102")
            assert caplog.text.count("not valid YAML") == 1  # reported once, not every poll

            replacement = tmp_path / "new.yaml"
            replacement.write_text("payments: [127.0.0.1:4103]\n")
            replacement.replace(path)  # editors and config tools swap the file
            await wait_until(lambda: endpoints.resolve("payments") == ("127.0.0.1:4103",))
            assert not endpoints.has("ledger")
        finally:
            watcher.cancel()

    caplog.set_level("INFO", logger="tracemesh.discovery")
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert changes == [
        ("payments", ("127.0.0.1:4101",)),
        ("ledger", ("127.0.0.1:4201",)),
        ("payments", ("127.0.0.1:4101", "127.0.0.1:4102")),
        ("payments", ("127.0.0.1:4103",)),
        ("ledger", ()),
    ]
