# The Tracemesh image: the collector and the sidecar proxy are the same program (`tracemesh`).
FROM python:3.11-slim
WORKDIR /opt/tracemesh
COPY pyproject.toml README.md ./
COPY tracemesh ./tracemesh
COPY spans ./spans
COPY collector ./collector
COPY mesh ./mesh
COPY ui ./ui
RUN pip install --no-cache-dir .
WORKDIR /var/lib/tracemesh
EXPOSE 4317 4318 9411
ENTRYPOINT ["tracemesh"]
CMD ["collector", "--otlp-grpc", "0.0.0.0:4317", "--otlp-http", "0.0.0.0:4318", "--http", "0.0.0.0:9411"]
