"""Create and migrate the schema, once, on any ClickHouse from 18.16 to 26.x.

Migrations are numbered SQL scripts (``sql/migrations/NNNN_name.sql``) applied in order and recorded
in ``schema_migrations``, so opening a store twice changes nothing and a later release adds
``0002_...sql``. Features newer servers have (TTL, skip indexes) are switched on by version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from collector.store import sql

MIGRATIONS_DIR = sql.SQL_DIR / "migrations"

# Feature name -> test on the server's (major, minor) version.
_FEATURES = {
    # 18.x accepts LowCardinality only behind this setting; 19+ has it and 2x rejects the setting.
    "experimental_low_cardinality": lambda version: version < (19, 0),
    # bloom_filter data-skipping indexes without the experimental switch.
    "skip_indexes": lambda version: version >= (20, 1),
    # Table TTL together with ttl_only_drop_parts and materialize_ttl_after_modify.
    "ttl": lambda version: version >= (20, 5),
    # The MergeTree setting merge_selector_base (migration 5). Present in 26.9; the threshold is kept
    # late on purpose, since a server that does not know a setting rejects the ALTER.
    "merge_selector_base": lambda version: version >= (25, 6),
}


@dataclass(frozen=True)
class ServerFeatures:
    version: tuple[int, int]

    @classmethod
    def from_version_text(cls, text: str) -> ServerFeatures:
        match = re.match(r"(\d+)\.(\d+)", text)
        if not match:
            raise ValueError(f"cannot read a ClickHouse version from {text!r}")
        return cls((int(match.group(1)), int(match.group(2))))

    def has(self, feature: str) -> bool:
        return _FEATURES[feature](self.version)


def server_features(backend) -> ServerFeatures:
    return ServerFeatures.from_version_text(backend.query(sql.load("server_version.sql"))["version"][0])


def migrations() -> list[tuple[int, str]]:
    """(version, file name) of every migration script, in order."""
    found = []
    for path in MIGRATIONS_DIR.glob("*.sql"):
        number, _, _ = path.stem.partition("_")
        found.append((int(number), path.name))
    return sorted(found)


def migrate(backend, features: ServerFeatures) -> list[int]:
    """Apply the migrations not yet recorded; returns the versions applied now."""
    backend.execute([sql.load("schema_migrations.sql")])
    applied = set(backend.query(sql.load("applied_migrations.sql"))["version"])
    applied_now = []
    for version, file_name in migrations():
        if version in applied:
            continue
        backend.execute(sql.script(sql.load(f"migrations/{file_name}"), features.has))
        backend.execute([sql.render(sql.load("record_migration.sql"), {"version": version, "name": file_name})])
        applied_now.append(version)
    return applied_now


def apply_retention_ttl(backend, features: ServerFeatures, retention_days: int) -> bool:
    """Set table TTLs to the retention period where the server supports TTL; False where it does not."""
    if not features.has("ttl"):
        return False
    backend.execute(sql.script(sql.load("retention_ttl.sql"), features.has, {"retention_days": retention_days}))
    return True
