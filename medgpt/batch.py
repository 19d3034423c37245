"""Bulk jobs with Ray Data: a JSONL file of notes or questions in, one result row per input row out.

    python -m medgpt.batch --task summarize --input notes.jsonl --output out/ [--replicas 2] [--threads 1]
    ./medgpt.sh batch --task ask --input questions.jsonl --output out/

Input rows carry an ``id`` and, for ``summarize``, ``text`` (and optionally ``style``: brief, bullets or soap); for
``ask``, ``question`` with ``options`` (an MCQ), ``note`` (a question about that note) or neither (an open
question). Each row runs through the same tasks as ``/ask`` and ``/summarize`` (prompts, guards, chunking), on a
pool of model replicas: Ray actors that each load the configured engine once (``map_batches`` with a callable
class), so a backlog is spread over every CPU Ray has, on one machine or a cluster.

Output: JSON-lines files under ``--output``, one row per input row with ``id``, ``ok``, ``result`` (a JSON string:
the summary or the answer), ``error`` (a per-row message; the job goes on), token usage, seconds and the replica
that ran it. Nothing is lost or doubled: Ray Data restarts a replica that dies and retries the batch it held on
another one, and a batch's rows are written only when the whole batch is done. A rerun skips the ids already in
the output, so an interrupted job resumes where it stopped. Clinical text is never logged; the output folder holds
it, as the input file does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

Task = Literal["summarize", "ask"]

#: Columns of every output row, in order (Arrow needs one schema for all rows).
COLUMNS = (
    "id",
    "ok",
    "result",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
    "finish_reason",
    "replica",
)


def output_rows(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The rows of these JSON-lines output files."""
    rows = []
    for path in paths:
        with path.open() as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


def done_ids(output: Path) -> Counter[str]:
    """How many times each id already appears in the output folder's JSON-lines files."""
    return Counter(r["id"] for r in output_rows(sorted(output.glob("*.json"))))


class Replica:
    """One model replica of the pool: its own engine (what the gateway would build from the same config), called
    by Ray Data with a batch of input rows and returning one output row for each."""

    def __init__(self, task: Task, model: str | None, max_tokens: int, threads: int) -> None:
        from medgpt.engines import create_engine
        from medgpt.settings import Settings

        # The gateway's settings, read as the gateway reads them (MEDGPT_CONFIG is set for the actor by ``run``).
        settings = Settings()
        settings.llamacpp = settings.llamacpp.model_copy(update={"n_threads": threads})
        self.engine = create_engine(settings)
        self.model = model or settings.default_model
        self.task = task
        self.max_tokens = max_tokens
        self.timeout = settings.limits.generation_timeout
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        n = len(next(iter(batch.values())))
        rows = [{k: _plain(v[i]) for k, v in batch.items()} for i in range(n)]
        out = [self.loop.run_until_complete(self.run_row(row)) for row in rows]
        return {c: [r[c] for r in out] for c in COLUMNS}

    async def run_row(self, row: dict[str, Any]) -> dict[str, Any]:
        from medgpt.engines import EngineError

        started = time.perf_counter()
        rec: dict[str, Any] = dict.fromkeys(COLUMNS)
        rec.update(id=None if row.get("id") is None else str(row["id"]), ok=False, replica=self.name,
                   prompt_tokens=0, completion_tokens=0)  # fmt: skip
        try:
            if rec["id"] is None:
                raise ValueError("the row has no id")
            result, usage, finish = await self._run_task(row)
            rec.update(ok=True, result=json.dumps(result), finish_reason=finish,
                       prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)  # fmt: skip
        except (EngineError, ValueError) as exc:
            # Our own messages (sizes, limits, missing fields): no clinical text is put in them.
            rec["error"] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - one odd row must not stop a backlog; its message may quote it
            rec["error"] = f"{type(exc).__name__} (unexpected)"
        rec["seconds"] = round(time.perf_counter() - started, 3)
        return rec

    async def _run_task(self, row: dict[str, Any]):
        from medgpt import tasks

        sampling = tasks.Sampling(max_tokens=self.max_tokens, timeout=self.timeout)
        if self.task == "summarize":
            text = _required(row, "text")
            r = await tasks.summarize(self.engine, self.model, text, style=row.get("style") or "brief",
                                      sampling=sampling)  # fmt: skip
            return {"summary": r.summary, "style": r.style, "chunks": r.chunks}, r.usage, r.finish_reason
        question = _required(row, "question")
        if row.get("options") is not None:
            if not isinstance(row["options"], dict):
                raise ValueError("'options' must be an object of letter: text")
            options = {str(k): str(v) for k, v in row["options"].items() if v is not None}
            r = await tasks.answer_mcq(self.engine, self.model, question, options, sampling=sampling)
            return {"analysis": r.analysis, "answer": r.answer, "choice": r.choice}, r.usage, r.finish_reason
        if row.get("note"):
            r = await tasks.answer_note(
                self.engine, self.model, str(row["note"]), question, sampling=sampling
            )
        else:
            r = await tasks.answer_open(self.engine, self.model, question, sampling=sampling)
        return {"answer": r.text}, r.usage, r.finish_reason


def _required(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"the row has no {key!r}")
    return value


def _plain(value: Any) -> Any:
    """A value from Ray's numpy batch as plain Python: numpy scalars unwrapped, and the NaN that pandas' JSON
    reader puts where a row lacks a field (``options`` on an open question) as None."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run(task: Task, input_path: Path, output: Path, *, config: str | None = None, model: str | None = None,
        replicas: int = 1, threads: int = 1, batch_size: int = 4, max_tokens: int = 256) -> dict[str, Any]:  # fmt: skip
    """Run the job (Ray must be initialised, or is started locally) and return its figures."""
    import ray

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    output.mkdir(parents=True, exist_ok=True)
    already = done_ids(output)
    # Reading, filtering and writing JSON lines are light: they take no CPU of Ray's budget, which the replicas
    # fill (2 replicas on 2 CPUs would otherwise leave the read task waiting for a CPU forever).
    ds = ray.data.read_json(str(input_path), lines=True, num_cpus=0)
    rows_in = ds.count()
    if already:
        skip = set(already)
        ds = ds.filter(lambda r: r.get("id") is None or str(r["id"]) not in skip, num_cpus=0)
    todo = ds.count()
    before = set(output.glob("*.json"))
    started = time.perf_counter()
    if todo:
        results = ds.map_batches(
            Replica,
            fn_constructor_kwargs={
                "task": task,
                "model": model,
                "max_tokens": max_tokens,
                "threads": threads,
            },
            batch_size=batch_size,
            concurrency=replicas,
            num_cpus=threads,
            batch_format="numpy",
            runtime_env={"env_vars": {"MEDGPT_CONFIG": str(Path(config).resolve())}} if config else None,
        )
        results.write_json(str(output), ray_remote_args={"num_cpus": 0})
    seconds = time.perf_counter() - started
    new = output_rows(sorted(set(output.glob("*.json")) - before))
    out = already + Counter(r["id"] for r in new)
    tokens = sum(r["completion_tokens"] or 0 for r in new)
    return {
        "rows_in": rows_in,
        "skipped_done": rows_in - todo,
        "ran": todo,
        "rows_written": len(new),
        "rows_out": sum(out.values()),
        "duplicates": sum(c - 1 for i, c in out.items() if c > 1 and i is not None),
        "errors": sum(1 for r in new if not r["ok"]),
        "seconds": round(seconds, 1),
        "rows_per_s": round(todo / seconds, 3) if todo and seconds else None,
        "completion_tokens_per_s": round(tokens / seconds, 1) if todo and seconds else None,
        "replicas": replicas,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medgpt.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["summarize", "ask"], required=True)
    p.add_argument("--input", type=Path, required=True, help="JSON lines with an id per row")
    p.add_argument(
        "--output", type=Path, required=True, help="folder of JSON-lines results (appended; resumable)"
    )
    p.add_argument(
        "--config", default=None, help="gateway config (default: MEDGPT_CONFIG, else config/medgpt.yaml)"
    )
    p.add_argument("--model", default=None, help="model name (default: the config's default_model)")
    p.add_argument("--replicas", type=int, default=1, help="model replicas (Ray actors)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per replica (its Ray num_cpus)")
    p.add_argument("--batch-size", type=int, default=4, help="rows per Ray batch (the unit that is retried)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: a local Ray)")
    args = p.parse_args(argv)
    if not args.input.is_file():
        p.error(f"{args.input} is not a file")
    import ray

    ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    figures = run(args.task, args.input, args.output, config=args.config, model=args.model, replicas=args.replicas,
                  threads=args.threads, batch_size=args.batch_size, max_tokens=args.max_tokens)  # fmt: skip
    print(json.dumps(figures), flush=True)
    ray.shutdown()
    return 0 if figures["rows_out"] == figures["rows_in"] and not figures["duplicates"] else 1


if __name__ == "__main__":
    sys.exit(main())
