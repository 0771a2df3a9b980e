"""Receivers: OTLP/gRPC, OTLP/HTTP and Zipkin v2 in, decoded span columns into the spool."""
