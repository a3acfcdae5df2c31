# imagesieve server image: slim, non-root, default model built in, health-checked.
#   docker build -t imagesieve .
#   docker run -p 50051:50051 imagesieve                    # plaintext, no tokens: local use only
#
# Production: TLS, bearer tokens, JSON logs, Prometheus metrics, persistent collections.
# certs/: server.crt + server.key (the SAN must include 127.0.0.1: the HEALTHCHECK dials it) and ca.crt;
# secrets/tokens.txt: one "TOKEN rw|ro NAME" line per caller, readable by uid 10001.
#   docker run -d --name imagesieve -p 50051:50051 -p 9090:9090 \
#     -v "$PWD/certs:/certs:ro" -v "$PWD/secrets:/secrets:ro" -v imagesieve-data:/data \
#     -e IMAGESIEVE_TLS_CERT=/certs/server.crt -e IMAGESIEVE_TLS_KEY=/certs/server.key \
#     -e IMAGESIEVE_TLS_CA=/certs/ca.crt -e IMAGESIEVE_TOKENS_FILE=/secrets/tokens.txt \
#     -e IMAGESIEVE_METRICS_PORT=9090 imagesieve
# (IMAGESIEVE_TLS_CA is for the HEALTHCHECK's client side; the server ignores it.)
# Mutual TLS: add -e IMAGESIEVE_TLS_CLIENT_CA=/certs/ca.crt and a client pair for the HEALTHCHECK:
#     -e IMAGESIEVE_CLIENT_TLS_CERT=/certs/health.crt -e IMAGESIEVE_CLIENT_TLS_KEY=/certs/health.key
# Callers: IMAGESIEVE_TOKEN=... imagesieve embed photos/ --server HOST:50051 --tls-ca ca.crt --out e.npy
# The health check and reflection need no token; every other call does.
# Stage 1 exports the model (torch, CPU build); the final image has no torch.
FROM python:3.11-slim AS model
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY client client
COPY service service
COPY models models
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt ./client ".[export]" \
    && pip install --no-cache-dir --no-deps -c constraints.txt foolbox==3.3.4 \
    && imagesieve-export mobilenet_v1 --out /models

FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY client client
COPY service service
COPY models/imagesieve_models models/imagesieve_models
RUN pip install --no-cache-dir -c constraints.txt ./client . \
    && useradd --create-home --uid 10001 imagesieve
COPY --from=model /models /models
ENV IMAGESIEVE_MODEL_DIR=/models \
    IMAGESIEVE_ADDRESS=0.0.0.0:50051 \
    IMAGESIEVE_DATA_DIR=/data \
    IMAGESIEVE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
RUN mkdir -p /data && chown 10001 /data
USER 10001
VOLUME ["/data"]
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["imagesieve", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["imagesieve", "serve"]
