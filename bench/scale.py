"""Scale-out on one machine: the gateway with the in-process engine, with the llama-server engine (continuous
batching) and as Ray Serve replicas, at several numbers of concurrent clients. Prints figures, asserts nothing.

Every setup serves the shipped default model (`medgpt`: Gemma 3 270M Q4_K_M + the MedGPT adapter) and gets the
same streamed open question (`POST /ask`, `stream: true`, `max_tokens` each). Not the base model: its answers are
mostly echoes of the prompt, which the gateway's echo guard refuses (502), so its failures would measure the model,
not the engines. The adapter's answers end on their own, at a length that depends on the engine's sampling, so the
tokens per answer are printed. Per setup and number of clients: requests ok/failed, aggregate generated tokens/s
(all tokens over the wall time), tokens per answer, p50/p95 time to the first token event and to the result. The
baseline is raw llama-cpp-python (same GGUF and adapter, same prompt, stopping at the end of turn), one stream, in
this process, measured first in the same run.

- in-process: one model behind a lock (`engine: llamacpp`, `llamacpp.n_threads` = --threads).
- llama-server: `engine: llamaserver`, `--parallel` slots, --threads threads; the gateway admits that many at once.
- Ray Serve: `serve run` of config/ray-serve.yaml with `--replicas` replicas of 1 CPU and 1 llama.cpp thread each.

The admission queue's depth is raised to 64 in every setup (the default 8 refuses 16 clients at once on the
in-process engine by design: that is the 503 path, not throughput).

    python bench/scale.py [--tokens 128] [--clients 1,4,8,16] [--parallel 8] [--threads 2] [--replicas 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from gateway_throughput import QUESTION, free_port, launch_gateway, raw_llama, wait_ready

ROOT = Path(__file__).resolve().parent.parent
MODEL = "medgpt"
BENCH_ENV = {
    "MEDGPT_DEFAULT_MODEL": MODEL,
    "MEDGPT_RATE_LIMITS__REQUESTS_PER_MINUTE": "0",
    "MEDGPT_RATE_LIMITS__TOKENS_PER_MINUTE": "0",
    "MEDGPT_ADMISSION__MAX_WAITING": "64",
    "MEDGPT_LOG_LEVEL": "WARNING",
}


async def ask_streamed(client: httpx.AsyncClient, tokens: int) -> dict:
    """One streamed /ask: ok, seconds to the first token event and to the end, tokens generated."""
    started = time.perf_counter()
    first, n, ok = None, 0, False
    body = {"question": QUESTION, "model": MODEL, "max_tokens": tokens, "stream": True}
    try:
        async with client.stream("POST", "/ask", json=body) as r:
            event = None
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: "):
                    if event == "token" and first is None:
                        first = time.perf_counter() - started
                    elif event == "result":
                        n, ok = json.loads(line[6:])["usage"]["completion_tokens"], r.status_code == 200
    except httpx.HTTPError:
        ok = False
    return {"ok": ok, "ttft": first, "latency": time.perf_counter() - started, "tokens": n}


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else values[0]


async def load(url: str, clients: int, tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(ask_streamed(client, tokens) for _ in range(clients)))
        wall = time.perf_counter() - started
    good = [r for r in results if r["ok"]]
    ttft = [r["ttft"] for r in good if r["ttft"] is not None]
    latency = [r["latency"] for r in good]
    return {
        "clients": clients,
        "ok": len(good),
        "failed": len(results) - len(good),
        "aggregate": sum(r["tokens"] for r in good) / wall,
        "tokens": statistics.mean(r["tokens"] for r in good) if good else float("nan"),
        "ttft_p50": statistics.median(ttft) if ttft else float("nan"),
        "ttft_p95": p95(ttft),
        "lat_p50": statistics.median(latency) if latency else float("nan"),
        "lat_p95": p95(latency),
    }


def start_ray(port: int, replicas: int) -> subprocess.Popen:
    """config/ray-serve.yaml on ``port`` with ``replicas`` replicas and the bench's settings, once ready."""
    config = yaml.safe_load((ROOT / "config" / "ray-serve.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["runtime_env"]["env_vars"].update(BENCH_ENV)
    app["deployments"][0]["num_replicas"] = replicas
    path = Path(tempfile.mkdtemp()) / "ray-serve.yaml"
    path.write_text(yaml.safe_dump(config))
    serve = Path(sys.executable).parent / "serve"
    proc = subprocess.Popen([str(serve), "run", str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})  # fmt: skip
    if wait_ready(port, proc, 300):
        return proc
    proc.send_signal(signal.SIGINT)
    raise SystemExit("Ray Serve did not become ready")


def stop(proc: subprocess.Popen, ray: bool = False) -> None:
    proc.send_signal(signal.SIGINT if ray else signal.SIGTERM)  # serve run shuts Serve down on SIGINT
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    if ray:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True, check=False)


def run_setup(name: str, args) -> list[dict]:
    port = free_port()
    if name == "ray-serve":
        proc = start_ray(port, args.replicas)
    elif name == "llama-server":
        proc = launch_gateway(port, {**BENCH_ENV, "MEDGPT_ENGINE": "llamaserver",
                                     "MEDGPT_LLAMASERVER__PARALLEL": str(args.parallel),
                                     "MEDGPT_LLAMASERVER__N_THREADS": str(args.threads)})  # fmt: skip
    else:
        proc = launch_gateway(port, {**BENCH_ENV, "MEDGPT_LLAMACPP__N_THREADS": str(args.threads)})
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(load(url, 1, 8))  # warm-up: loads and first-touches the model in every process
        if name == "ray-serve":
            asyncio.run(load(url, args.replicas * 2, 8))  # every replica
        return [asyncio.run(load(url, n, args.tokens)) | {"setup": name} for n in args.clients]
    finally:
        stop(proc, ray=name == "ray-serve")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    ap.add_argument("--parallel", type=int, default=8, help="llama-server slots")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (in-process and llama-server)")
    ap.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas (1 CPU, 1 thread each)")
    ap.add_argument("--repeats", type=int, default=3, help="raw single-stream runs (median)")
    ap.add_argument("--setups", default="in-process,llama-server,ray-serve")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from medgpt.models import ensure_default_gguf
    from medgpt.settings import Settings

    ensure_default_gguf(ROOT / "models")
    spec = Settings().model(MODEL)
    gguf = spec.path
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    llm, raw_once = raw_llama(gguf, args.threads, spec.adapter)
    raw_once(8)
    raw = statistics.median(raw_once(args.tokens) for _ in range(args.repeats))
    llm.close()

    rows = [row for name in args.setups.split(",") for row in run_setup(name, args)]

    print(f"model {MODEL} ({gguf.name} + {spec.adapter.name}), max_tokens {args.tokens}, cpus {os.cpu_count()}, "
          f"threads {args.threads}, llama-server slots {args.parallel}, Ray replicas {args.replicas} x 1 thread, load before {load_before}")
    print(f"raw llama-cpp-python, one stream: {raw:.1f} tok/s (median of {args.repeats})")
    print(f"{'setup':<13} {'clients':>7} {'ok':>4} {'failed':>6} {'tok/s':>7} {'x raw':>6} {'tok/req':>7} "
          f"{'TTFT p50':>9} {'TTFT p95':>9} {'lat p50':>8} {'lat p95':>8}")
    for r in rows:
        print(f"{r['setup']:<13} {r['clients']:>7} {r['ok']:>4} {r['failed']:>6} {r['aggregate']:>7.1f} "
              f"{r['aggregate'] / raw:>6.2f} {r['tokens']:>7.1f} {r['ttft_p50']:>8.2f}s {r['ttft_p95']:>8.2f}s "
              f"{r['lat_p50']:>7.2f}s {r['lat_p95']:>7.2f}s")
    target = next((r for r in rows if r["setup"] == "llama-server" and r["clients"] == 8), None)
    if target:
        print(f"targets, llama-server at 8 clients: aggregate >= 1.4x raw: {target['aggregate'] / raw:.2f}x; "
              f"failed 0: {target['failed']}; TTFT p95 < 5 s: {target['ttft_p95']:.2f} s")


if __name__ == "__main__":
    main()
