"""A real store of each backend filled with the test corpus, served by the query API: one per test module.

Filling a store and starting a server takes about a second, and the query tests only read, so the
fixture is module-scoped (pytest finishes one backend before it starts the next: chDB allows one
session per process).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from clickhouse_driver import Client

from collector.store import SpanStore, open_store
from tests.support.query_server import serving_query_api
from tests.support.trace_corpus import Corpus


@dataclass
class ServedCorpus:
    base_url: str
    corpus: Corpus
    store: SpanStore


@pytest.fixture(scope="module", params=["chdb", "clickhouse"])
def api_over_corpus(request, tmp_path_factory):
    """The query API's base URL over a store holding ``Corpus()``, on chDB and on the ClickHouse server.

    A test module using it imports ``clickhouse_server_url`` too (the server fixture it asks for).
    """
    if request.param == "chdb":
        url = f"chdb://{tmp_path_factory.mktemp('query-chdb')}/chdb"
        drop_database = None
    else:
        base, _, _ = request.getfixturevalue("clickhouse_server_url").rpartition("/")
        database = f"test_query_{uuid.uuid4().hex[:12]}"
        url = f"{base}/{database}"
        drop_database = (f"{base}/default", database)
    corpus = Corpus()
    store = open_store(url)
    try:
        store.insert(corpus.columns())
        with serving_query_api(store) as base_url:
            yield ServedCorpus(base_url, corpus, store)
    finally:
        store.close()
        if drop_database:
            client = Client.from_url(drop_database[0])
            client.execute(f"DROP DATABASE IF EXISTS {drop_database[1]}")
            client.disconnect()
