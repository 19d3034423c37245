"""Soak: many clients for minutes against the real gateway with API keys and rate limits on. Prints figures,
asserts nothing (the targets are read by people: 0 failed, refusals only 429/503 with Retry-After, RSS growth
under 10%).

The gateway runs as ``medgpt.sh up`` runs it (uvicorn subprocess, embedded llama.cpp engine, the real GGUF and
the shipped adapter). Each client loops over a mix of every route (MCQ, note QA, open question, summary, a
streamed answer, /models, /health, plus requests that must be refused: no key, invalid body) and, like a
well-behaved client, waits the ``Retry-After`` it is given. A response is:

- ok: the status the request should get (200, or the 401/422 it was built to get);
- refused: 429 or 503 carrying ``Retry-After`` (admission control and rate limits doing their job);
- failed: anything else (a 5xx, a refusal without Retry-After, a transport error).

    python bench/soak.py [--clients 16] [--minutes 10] [--rpm 120] [--tpm 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_throughput import free_port, launch_gateway

NOTE = (
    "HISTORY: 58-year-old man with type 2 diabetes, HbA1c 8.9%, on metformin 1000 mg twice daily. ASSESSMENT: "
    "Poorly controlled type 2 diabetes. PLAN: Start empagliflozin 10 mg once daily, recheck HbA1c in 3 months."
)
MCQ = {
    "question": "A 23-year-old woman has fever, dysuria and right flank pain with white cell casts. Diagnosis?",
    "options": {"A": "Acute cystitis", "B": "Acute pyelonephritis", "C": "Nephrolithiasis", "D": "Urethritis"},
    "max_tokens": 48,
}
#: (name, method, path, body, expected status, with key)
MIX = [
    ("mcq", "POST", "/ask", MCQ, 200, True),
    ("note_qa", "POST", "/ask", {"question": "Which drug was started?", "context": NOTE, "max_tokens": 32}, 200, True),
    ("open", "POST", "/ask", {"question": "What causes iron deficiency anemia?", "max_tokens": 32}, 200, True),
    ("summary", "POST", "/summarize", {"text": NOTE, "style": "brief", "max_tokens": 48}, 200, True),
    ("stream", "POST", "/ask", {"question": "What is sepsis?", "max_tokens": 24, "stream": True}, 200, True),
    ("models", "GET", "/models", None, 200, True),
    ("health", "GET", "/health", None, 200, False),
    ("no_key", "POST", "/ask", {"question": "What is sepsis?"}, 401, False),
    ("invalid", "POST", "/ask", {"question": ""}, 422, True),
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_gateway(port: int, key: str, rpm: int, tpm: int) -> subprocess.Popen:
    """The gateway with one API key required and the given per-key limits."""
    return launch_gateway(port, {
        "MEDGPT_AUTH__REQUIRED": "true",
        "MEDGPT_AUTH__KEYS": json.dumps([{"name": "soak", "sha256": hashlib.sha256(key.encode()).hexdigest()}]),
        "MEDGPT_RATE_LIMITS__REQUESTS_PER_MINUTE": str(rpm),
        "MEDGPT_RATE_LIMITS__TOKENS_PER_MINUTE": str(tpm),
        "OMP_WAIT_POLICY": "PASSIVE",
        # as medgpt.sh and the image start it (unless the caller's environment says otherwise)
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
    }, ready_timeout=300)  # fmt: skip


async def one(client: httpx.AsyncClient, key: str, item) -> tuple[str, str, float, float]:
    """(route name, outcome, seconds, retry-after seconds)."""
    name, method, path, body, expected, keyed = item
    headers = {"Authorization": f"Bearer {key}"} if keyed else {}
    started = time.perf_counter()
    try:
        if body is not None and body.get("stream"):
            async with client.stream(method, path, json=body, headers=headers) as r:
                text = (await r.aread()).decode()
                status = r.status_code
                retry = r.headers.get("retry-after")
                if status == 200 and "event: result" not in text:
                    return name, "failed", time.perf_counter() - started, 0.0
        else:
            r = await client.request(method, path, json=body, headers=headers)
            status, retry = r.status_code, r.headers.get("retry-after")
    except httpx.HTTPError:
        return name, "failed", time.perf_counter() - started, 0.0
    seconds = time.perf_counter() - started
    if status == expected:
        return name, "ok", seconds, 0.0
    if status in (429, 503) and retry is not None:
        return name, f"refused_{status}", seconds, float(retry)
    return name, f"failed_{status}", seconds, 0.0


async def client_loop(url: str, key: str, until: float, results: list, seed: int) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        while time.monotonic() < until:
            result = await one(client, key, rng.choice(MIX))
            results.append(result)
            if result[3]:
                await asyncio.sleep(min(result[3], max(0.0, until - time.monotonic())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rpm", type=int, default=120, help="requests per minute per key")
    ap.add_argument("--tpm", type=int, default=20000, help="generated tokens per minute per key")
    args = ap.parse_args()
    key = secrets.token_urlsafe(32)
    port = free_port()
    proc = start_gateway(port, key, args.rpm, args.tpm)
    url = f"http://127.0.0.1:{port}"
    results: list = []
    try:
        # RSS after one request of each kind, so the baseline includes the loaded model and adapter.
        asyncio.run(asyncio.wait_for(warm(url, key), 900))
        rss_start = rss_kib(proc.pid)
        until = time.monotonic() + args.minutes * 60
        started = time.perf_counter()

        async def run_all() -> None:
            await asyncio.gather(*(client_loop(url, key, until, results, i) for i in range(args.clients)))

        asyncio.run(run_all())
        wall = time.perf_counter() - started
        rss_end = rss_kib(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    outcomes = Counter(o for _, o, _, _ in results)
    ok = [s for _, o, s, _ in results if o == "ok"]
    q = statistics.quantiles(ok, n=20) if len(ok) >= 2 else [float("nan")] * 19
    failed = sum(n for o, n in outcomes.items() if o.startswith("failed"))
    refused = sum(n for o, n in outcomes.items() if o.startswith("refused"))
    print(f"clients {args.clients}, {wall / 60:.1f} min, rate limits {args.rpm} req/min and {args.tpm} tok/min per "
          f"key, cpus {os.cpu_count()}, load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"requests {len(results)}: ok {outcomes['ok']}, refused {refused} "
          f"(429: {outcomes['refused_429']}, 503: {outcomes['refused_503']}), failed {failed}")
    for o, n in sorted(outcomes.items()):
        if o.startswith("failed"):
            print(f"  {o}: {n}")
    print(f"latency of ok requests: p50 {statistics.median(ok) if ok else float('nan'):.2f} s, p95 {q[18]:.2f} s")
    by_route = Counter((name, o) for name, o, _, _ in results)
    print("per route (ok/refused/failed): " + ", ".join(
        f"{name} {by_route[(name, 'ok')]}/"
        f"{sum(n for (r, o), n in by_route.items() if r == name and o.startswith('refused'))}/"
        f"{sum(n for (r, o), n in by_route.items() if r == name and o.startswith('failed'))}"
        for name, *_ in MIX
    ))
    print(f"gateway RSS: start {rss_start / 1024:.0f} MiB, end {rss_end / 1024:.0f} MiB, growth "
          f"{(rss_end - rss_start) / rss_start * 100:+.1f}% (target < 10%); still serving: {alive}")


async def warm(url: str, key: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for item in MIX:
            await one(client, key, item)


if __name__ == "__main__":
    main()
