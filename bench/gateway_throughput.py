"""Gateway overhead and concurrency on the real GGUF: prints figures, asserts nothing (targets are read by people).

1. raw llama-cpp-python: tokens/s for one prompt, in this process;
2. the gateway over real HTTP (uvicorn subprocess, embedded llama.cpp engine): the same prompt, end-to-end tokens/s,
   and the ratio to (1) (target >= 0.95);
3. N concurrent clients (default 8) against the gateway: ok/failed, p50/p95 latency, aggregate tokens/s.

    python bench/gateway_throughput.py [--tokens 128] [--clients 8] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The gateway's engine sets this too (see medgpt/engines/llamacpp.py): compare like with like.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from medgpt import prompts, templates
from medgpt.models import ensure_default_gguf

QUESTION = "Explain the pathophysiology, symptoms and first-line treatment of community-acquired pneumonia."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_llama(gguf: Path, threads: int, adapter: Path | None = None):
    """The same model (``adapter``: its LoRA), settings and prompt as the gateway, called directly: the baseline."""
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False,
                lora_path=str(adapter) if adapter else None)  # fmt: skip
    ids = llm.tokenize(templates.render(prompts.open_question_messages(QUESTION)).encode(), add_bos=True, special=True)

    def once(tokens: int) -> float:
        started = time.perf_counter()
        out = llm.create_completion(ids, max_tokens=tokens, temperature=0.0, stop=["<end_of_turn>"])
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)

    return llm, once


def launch_gateway(port: int, env: dict[str, str], ready_timeout: float = 120) -> subprocess.Popen:
    """The gateway as ``medgpt.sh up`` runs it (uvicorn, no access log) with ``env`` over this process's
    environment, once ``/ready`` answers 200."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "MEDGPT_ENGINE": "llamacpp", "MEDGPT_LOG_LEVEL": "WARNING", **env},
    )  # fmt: skip
    if not wait_ready(port, proc, ready_timeout):
        proc.kill()
        raise SystemExit("gateway did not become ready")
    return proc


def wait_ready(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    """Whether ``/ready`` on ``port`` answers 200 within ``timeout`` seconds (False at once if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=60).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def start_gateway(port: int, threads: int) -> subprocess.Popen:
    return launch_gateway(port, {
        "MEDGPT_DEFAULT_MODEL": "gemma3-270m", "MEDGPT_LLAMACPP__N_THREADS": str(threads),
        # a benchmark measures the engine, not the per-client limits (bench/soak.py runs with them on)
        "MEDGPT_RATE_LIMITS__REQUESTS_PER_MINUTE": "0", "MEDGPT_RATE_LIMITS__TOKENS_PER_MINUTE": "0",
        "MEDGPT_ADMISSION__MAX_WAITING": "64",
    })  # fmt: skip


async def ask(client: httpx.AsyncClient, tokens: int) -> tuple[bool, float, int]:
    started = time.perf_counter()
    try:
        r = await client.post("/ask", json={"question": QUESTION, "model": "gemma3-270m", "max_tokens": tokens})
        ok = r.status_code == 200
        n = r.json()["usage"]["completion_tokens"] if ok else 0
    except httpx.HTTPError:
        ok, n = False, 0
    return ok, time.perf_counter() - started, n


async def gateway_once(url: str, tokens: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        ok, seconds, n = await ask(client, tokens)
    return n / seconds if ok else 0.0


async def gateway_concurrent(url: str, tokens: int, clients: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(ask(client, tokens) for _ in range(clients)))
        wall = time.perf_counter() - started
    latencies = sorted(s for ok, s, _ in results if ok)
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
    return {
        "ok": sum(ok for ok, _, _ in results),
        "failed": sum(not ok for ok, _, _ in results),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": q[18] if q else float("nan"),
        "aggregate_tps": sum(n for _, _, n in results) / wall,
        "wall": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    gguf = ensure_default_gguf(ROOT / "models")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())

    port = free_port()
    proc = start_gateway(port, args.threads)
    llm, raw_once = raw_llama(gguf, args.threads)
    url = f"http://127.0.0.1:{port}"
    try:
        # Interleaved, so that load from anything else on the machine hits both sides alike.
        raw_rates, gw_rates = [], []
        for _ in range(args.repeats):
            raw_rates.append(raw_once(args.tokens))
            gw_rates.append(asyncio.run(gateway_once(url, args.tokens)))
        llm.close()
        raw, single = statistics.median(raw_rates), statistics.median(gw_rates)
        conc = asyncio.run(gateway_concurrent(url, args.tokens, args.clients))
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"model: {gguf.name}, threads {args.threads}, max_tokens {args.tokens}, cpus {os.cpu_count()}, "
          f"load average before: {load_before}")
    print(f"raw llama-cpp-python       : {raw:6.1f} tok/s (median of {args.repeats})")
    print(f"gateway end-to-end (HTTP)  : {single:6.1f} tok/s (median of {args.repeats})")
    print(f"ratio gateway / raw        : {single / raw:6.3f}   (target >= 0.95)")
    print(f"{args.clients} concurrent clients      : ok {conc['ok']}, failed {conc['failed']}, "
          f"p50 {conc['p50']:.2f} s, p95 {conc['p95']:.2f} s, aggregate {conc['aggregate_tps']:.1f} tok/s "
          f"(wall {conc['wall']:.1f} s)")


if __name__ == "__main__":
    main()
