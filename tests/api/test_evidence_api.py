"""``evidence`` on /ask through the real app, engine and GGUF: verbatim note spans for note_qa, null otherwise."""

import json

from tests.api.test_ask import _events
from tests.conftest import DATA, MCQ


def _remicade_row() -> dict:
    rows = [json.loads(line) for line in (DATA / "notes" / "note_instructions_dev.jsonl").open()]
    return next(r for r in rows if "last dose of Remicade" in r["question"])


def _assert_evidence(note: str, evidence) -> None:
    # The question alone ("last dose of Remicade") has words found in few of the note's sentences, so there is
    # evidence whatever the 270M model answers.
    assert isinstance(evidence, list) and 1 <= len(evidence) <= 3
    for span in evidence:
        assert note[span["start"] : span["end"]] == span["text"]
        assert span["score"] > 0
    assert [s["start"] for s in evidence] == sorted(s["start"] for s in evidence)


def test_note_qa_evidence_is_verbatim_in_json_and_in_the_stream(client):
    row = _remicade_row()
    # the shipped model: the base model's note answers are echoes, which the gateway refuses (502)
    body = {"question": row["question"], "context": row["note"], "model": "medgpt", "max_tokens": 32}
    r = client.post("/ask", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["mode"] == "note_qa"
    _assert_evidence(row["note"], answer["evidence"])

    with client.stream("POST", "/ask", json={**body, "stream": True}) as s:
        assert s.status_code == 200
        events = _events(s.read().decode())
    assert events[-1][0] == "result"
    final = events[-1][1]
    _assert_evidence(row["note"], final["evidence"])
    if final["answer"] == answer["answer"]:  # greedy decoding: the same answer has the same evidence
        assert final["evidence"] == answer["evidence"]


def test_open_and_mcq_answers_have_no_evidence(client):
    r = client.post("/ask", json={"question": "What is hypertension?", "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "open" and r.json()["evidence"] is None
    r = client.post("/ask", json={**MCQ, "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "mcq" and r.json()["evidence"] is None
