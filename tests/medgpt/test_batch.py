"""Ray Data batch jobs on a local Ray (2 CPUs, loopback), the real GGUF through the real llama.cpp engine in each
replica: one output row per input row, per-row errors, resume, and a replica killed mid-job losing nothing."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from medgpt import batch

from ..conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


#: What a row may carry instead of an answer when another machine's arithmetic gives other tokens: the output
#: guards' refusal (the text echoed the input), reported on that row as the gateway would answer it (502).
GUARD_REFUSALS = ("EchoedPrompt:", "InvalidOutput:")


def _answered(row: dict, key: str) -> bool:
    """The row has a non-empty ``key`` in its result, or the output guards refused the model's text."""
    if row["ok"]:
        return bool(json.loads(row["result"])[key].strip())
    return row["error"].startswith(GUARD_REFUSALS)


def _notes(path: Path, n: int, broken: int | None = None) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "data" / "notes" / "mtsamples_500.jsonl").open()][:n]
    with path.open("w") as fh:
        for i, r in enumerate(rows):
            row = {"id": f"note-{i}", "text": r["transcription"][:600]}
            if i == broken:
                row = {"id": f"note-{i}"}  # no text: an error row, and the job goes on
            fh.write(json.dumps(row) + "\n")
    return [f"note-{i}" for i in range(n)]


def _out_rows(output: Path) -> list[dict]:
    return batch.output_rows(sorted(output.glob("*.json")))


def test_every_row_out_once_with_per_row_errors_and_a_rerun_skips_done_ids(
    local_ray, tmp_path, settings_file
):
    config = str(settings_file)
    ids = _notes(tmp_path / "in.jsonl", 4, broken=2)
    out = tmp_path / "out"
    # 2 replicas × 1 CPU fill the local Ray's 2 CPUs: the read and write steps must still run (they take no CPU)
    figures = batch.run("summarize", tmp_path / "in.jsonl", out, config=config, max_tokens=24, batch_size=2,
                        replicas=2)  # fmt: skip
    assert len({r["replica"] for r in _out_rows(out)}) <= 2
    assert figures["rows_in"] == figures["rows_out"] == figures["rows_written"] == 4
    rows = {r["id"]: r for r in _out_rows(out)}
    assert sorted(rows) == ids
    assert figures["duplicates"] == 0 and figures["errors"] == sum(not r["ok"] for r in rows.values())
    assert rows["note-2"]["ok"] is False and rows["note-2"]["error"] == "ValueError: the row has no 'text'"
    for i in ("note-0", "note-1", "note-3"):
        assert _answered(rows[i], "summary") and rows[i]["seconds"] > 0
        assert rows[i]["completion_tokens"] > 0 or not rows[i]["ok"]
    assert any(rows[i]["ok"] for i in ("note-0", "note-1", "note-3")), "no summary came back at all"

    again = batch.run("summarize", tmp_path / "in.jsonl", out, config=config, max_tokens=24)
    assert again["ran"] == 0 and again["skipped_done"] == 4 and again["rows_out"] == 4


def test_ask_rows_pick_mcq_note_or_open_by_their_fields(local_ray, tmp_path, settings_file):
    config = str(settings_file)
    rows = [
        {"id": 1, "question": "Which drug dissolves the clot in acute ischaemic stroke?",
         "options": {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Alteplase"}},
        {"id": 2, "question": "What medication is the patient on?", "note": "Patient takes metformin 500 mg daily."},
        {"id": 3, "question": "What is hypertension?"},
    ]  # fmt: skip
    (tmp_path / "ask.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = batch.run("ask", tmp_path / "ask.jsonl", tmp_path / "out", config=config, max_tokens=48)
    assert figures["rows_out"] == 3
    got = {r["id"]: r for r in _out_rows(tmp_path / "out")}
    mcq = json.loads(got["1"]["result"])  # the grammar makes an MCQ answer on any machine
    assert mcq["choice"] in {"A", "B", "C", "D"} and "analysis" in mcq
    assert _answered(got["2"], "answer") and _answered(got["3"], "answer")


def _replica_processes() -> list[psutil.Process]:
    """Ray's worker processes running a replica (Ray titles them ``ray::MapWorker(MapBatches(Replica))``)."""
    return [p for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[0].startswith("ray::MapWorker(MapBatches(Replica))")]  # fmt: skip


def test_a_replica_killed_mid_job_loses_no_row_and_doubles_none(local_ray, tmp_path, settings_file):
    config = str(settings_file)
    ids = _notes(tmp_path / "in.jsonl", 8)
    out = tmp_path / "out"
    result: dict = {}
    # Replicas of the earlier tests' jobs may still be exiting: only a process this job starts is the victim.
    earlier = {p.pid for p in _replica_processes()}
    job = threading.Thread(target=lambda: result.update(batch.run(
        "summarize", tmp_path / "in.jsonl", out, config=config, max_tokens=96, batch_size=1)))  # fmt: skip
    job.start()
    try:
        deadline = time.monotonic() + 300
        while (
            not (ours := [p for p in _replica_processes() if p.pid not in earlier])
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert ours, "no replica process of this job appeared"
        time.sleep(3)  # the model is loaded and a row or two are done
        assert job.is_alive(), "the job finished before the replica could be killed"
        victim = ours[0]
        killed = f"{os.uname().nodename}:{victim.pid}"
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        job.join(timeout=600)  # never leave a job running on a Ray that the module is about to shut down
    assert not job.is_alive()

    rows = _out_rows(out)
    assert sorted(r["id"] for r in rows) == ids  # every row exactly once
    assert all(r["ok"] or r["error"].startswith(GUARD_REFUSALS) for r in rows)  # none lost to the kill
    assert {r["replica"] for r in rows} - {killed}, "no row was run by the restarted replica"
    assert result["rows_out"] == result["rows_in"] == 8 and result["duplicates"] == 0
