INSERT INTO schema_migrations (version, name) SELECT %(version)s, %(name)s
