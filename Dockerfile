# TerraLens for a GPU workstation: CUDA PyTorch (bundled CUDA runtime wheels), Python 3.12,
# the newest terratorch, the app served by Streamlit on port 8501 as a non-root user.
#
#   docker build -t terralens .                                   # weights fetched on first use
#   docker build --build-arg TERRAMIND_WEIGHTS="base:S1GRD,LULC,NDVI,DEM" -t terralens .
#                                                                 # weights baked, runs offline

# ---- build stage: a virtual environment with the app and its dependencies -------------------
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY constraints/py312.txt ./constraints/py312.txt
COPY app ./app
COPY inference ./inference
# The lock pins the whole stack (diffusers' schedulers decide generated values).
RUN pip install --no-compile "pip>=24" && pip install --no-compile -c constraints/py312.txt .

# Optional: pre-download TerraMind weights into the image's Hugging Face cache.
# Format: "<size>:<OUTPUT>,<OUTPUT>" e.g. "base:S1GRD,LULC,NDVI,DEM"; empty = download on use.
ARG TERRAMIND_WEIGHTS=""
ENV HF_HOME=/opt/hf
RUN mkdir -p /opt/hf && if [ -n "$TERRAMIND_WEIGHTS" ]; then \
        terralens weights download --spec "$TERRAMIND_WEIGHTS"; \
    fi

# ---- final stage: only the venv, the HF cache and the app sources ---------------------------
FROM python:3.12-slim-bookworm
ARG TERRAMIND_WEIGHTS=""
RUN useradd --create-home --uid 1000 terralens \
    && mkdir -p /data /opt/hf \
    && chown terralens:terralens /data /opt/hf
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=terralens:terralens /opt/hf /opt/hf
WORKDIR /opt/terralens
COPY --chown=terralens:terralens app ./app
COPY --chown=terralens:terralens inference ./inference
COPY --chown=terralens:terralens pages ./pages
COPY --chown=terralens:terralens assets ./assets
COPY --chown=terralens:terralens .streamlit ./.streamlit
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/opt/hf \
    HF_HUB_OFFLINE=${TERRAMIND_WEIGHTS:+1} \
    TERRALENS_DATA_DIR=/data \
    TERRALENS_DEVICE=auto \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
USER 1000:1000
VOLUME ["/data"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"]
CMD ["streamlit", "run", "app/ui/main.py", "--server.address=0.0.0.0", "--server.port=8501"]
