# imagesieve server image: slim, non-root, default model built in, health-checked.
#   docker build -t imagesieve .
#   docker run -p 50051:50051 imagesieve
# Stage 1 exports the model (torch, CPU build); the final image has no torch.
FROM python:3.11-slim AS model
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY client client
COPY service service
COPY models models
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt ".[server,export]" \
    && pip install --no-cache-dir --no-deps -c constraints.txt foolbox==3.3.4 \
    && imagesieve-export mobilenet_v1 --out /models

FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY client client
COPY service service
COPY models/imagesieve_models models/imagesieve_models
RUN pip install --no-cache-dir -c constraints.txt ".[server]" \
    && useradd --create-home --uid 10001 imagesieve
COPY --from=model /models /models
ENV IMAGESIEVE_MODEL_DIR=/models \
    IMAGESIEVE_ADDRESS=0.0.0.0:50051
USER 10001
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["imagesieve", "health", "--server", "127.0.0.1:50051"]
ENTRYPOINT ["imagesieve", "serve"]
