SELECT DISTINCT version FROM schema_migrations ORDER BY version
