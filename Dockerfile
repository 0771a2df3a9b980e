# The Tracemesh image: the collector and the sidecar proxy are the same program (`tracemesh`).
FROM python:3.11-slim
# A C compiler for the native modules (OTLP decoding and encoding, the proxy's HTTP/1.1 heads).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/tracemesh
COPY pyproject.toml setup.py README.md ./
COPY tracemesh ./tracemesh
COPY spans ./spans
COPY collector ./collector
COPY mesh ./mesh
COPY ui ./ui
COPY examples ./examples
# Editable, so `tracemesh demo` finds the shop in examples/ beside the packages.
RUN pip install --no-cache-dir -e .
WORKDIR /var/lib/tracemesh
EXPOSE 4317 4318 4319 9411
ENTRYPOINT ["tracemesh"]
CMD ["collector", "--otlp-grpc", "0.0.0.0:4317", "--otlp-http", "0.0.0.0:4318", "--http", "0.0.0.0:9411", "--control", "0.0.0.0:4319"]
