# The Tracemesh image: the collector and the sidecar proxy are the same program (`tracemesh`).
FROM python:3.11-slim
WORKDIR /opt/tracemesh
COPY pyproject.toml README.md ./
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
