"""The control plane: proxies register here and receive the mesh-wide view computed from traces.

``registry`` (who is in the mesh, by heartbeat), ``weights`` (routing weights from the live edge
metrics), ``hints`` (autoscaling recommendations), ``plane`` (ticks them into versioned snapshots),
``server`` (the gRPC service), ``api`` (hints over HTTP and Prometheus).
"""
