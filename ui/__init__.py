"""The service-graph web UI, served by the collector; it talks only to the collector HTTP API."""
