"""Tracemesh sidecar proxy: HTTP/1.1 and gRPC data paths, the reliability layers around them, span export."""
