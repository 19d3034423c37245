"""Scorers on fixed inputs with known answers: exact scores, ROUGE, the lenient judge-reply parser."""

import pytest

from evaluator.judges.base import is_loopback_url, parse_verdict
from evaluator.scorers import exact
from evaluator.scorers.judge import mean_score, missing_tag
from evaluator.scorers.rouge import Rouge
from evaluator.types import MCQItem, MCQOutput, Verdict

ITEM = MCQItem(
    id="q1", question="Q?", options={"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "None"}, answer="B"
)


def out(raw: str = "", choice=None, error=None) -> MCQOutput:
    return MCQOutput(model="m", raw_text=raw, choice=choice, error=error, completion_tokens=10, seconds=2.0)


def test_choice_accuracy_counts_errors_as_wrong():
    assert exact.choice_correct(ITEM, out(choice="B"))
    assert not exact.choice_correct(ITEM, out(choice="A"))
    assert not exact.choice_correct(ITEM, out(choice="B", error="EngineUnavailable: down"))
    iv = exact.proportion([True, False, True, None])  # None = unknown, left out of the denominator
    assert (iv.n, iv.estimate) == (3, pytest.approx(2 / 3))


@pytest.mark.parametrize(
    "raw,ok",
    [
        ("<analysis>Heparin is right.</analysis>\n<answer>B: Heparin</answer>", True),
        ("<analysis>x</analysis><answer>Heparin</answer>", True),  # exact option text parses too
        ("<analysis>x</analysis><answer>E: Other</answer>", False),  # not an option
        ("<answer>B: Heparin</answer>", False),  # analysis tag missing
        ("<analysis>x</analysis><answer>B: Heparin", False),  # unclosed answer
        ("<answer>B</answer><answer>B</answer><answer>B", False),  # the base model's loop
        ("The answer is B.", False),
    ],
)
def test_format_compliance(raw, ok):
    assert exact.format_compliant(ITEM, out(raw)) is ok


def test_format_compliance_unknown_without_raw_text():
    assert exact.format_compliant(ITEM, MCQOutput(model="m", well_formed=None)) is None


def test_latency_summary_and_throughput():
    s = exact.latency_summary([1.0, 2.0, 3.0, 10.0], [10, 20, 30, 40])
    assert s["mean_s"] == 4.0 and s["p50_s"] == 2.5
    assert s["tokens_per_s"] == pytest.approx(100 / 16)
    assert exact.tokens_per_second(0, 1.0) is None


def test_rouge_on_fixed_strings():
    r = Rouge()
    assert r.score("the cat sat on the mat", "the cat sat on the mat") == {
        "rouge1": 1.0,
        "rouge2": 1.0,
        "rougeL": 1.0,
    }
    s = r.score("the cat sat on the mat", "the dog")
    assert s["rouge1"] == pytest.approx(0.25)  # P = 1/2, R = 1/6
    assert s["rouge2"] == 0.0
    assert r.score("chest pain", "   ") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    # Stemming: "infections" and "infection" match.
    assert r.score("urinary infection", "urinary infections")["rouge1"] == 1.0


@pytest.mark.parametrize(
    "reply,score,expl",
    [
        ('{"score": 4, "explanation": "Correct option, minor gap."}', 4.0, "Correct option, minor gap."),
        ('```json\n{"explanation": "ok", "score": "5"}\n```', 5.0, "ok"),
        ('Here is my grade: {"score": 2, "explanation": "wrong {option}"} Thanks!', 2.0, "wrong {option}"),
        ("{'score': 3, 'explanation': 'single quotes'}", 3.0, "single quotes"),
        (
            '{"score": 1, "explanation": "truncated because the judge ran out of tok',
            1.0,
            "truncated because the judge ran out of tok",
        ),
        ("Score: 0. The answer tag is missing.", 0.0, ""),
        ('{"score": 7, "explanation": "out of range"}', None, "out of range"),
        ('{"score": "high", "explanation": "not a number"}', None, "not a number"),
        ('{"explanation": "no score at all"}', None, "no score at all"),
        ("", None, ""),
        ("I think the candidate did well.", None, ""),
        ('{"score": true, "explanation": "bool is not a score"}', None, "bool is not a score"),
    ],
)
def test_lenient_verdict_parse(reply, score, expl):
    got_score, got_expl = parse_verdict(reply)
    assert got_score == score
    assert got_expl == expl


def test_mean_over_judges_ignores_unscored():
    vs = [Verdict("a", 4.0, ""), Verdict("b", None, "", error="unparsable"), Verdict("c", 2.0, "")]
    assert mean_score(vs) == 3.0
    assert mean_score([Verdict("a", None, "")]) is None


def test_missing_tag_rule():
    assert missing_tag("<analysis>x</analysis><answer>B</answer>") is None
    assert missing_tag("<answer>B</answer>") == "analysis"
    assert missing_tag("<analysis>x</analysis><answer>B") == "answer"


def test_loopback_detection_decides_what_is_external():
    assert is_loopback_url("http://127.0.0.1:8081")
    assert is_loopback_url("http://localhost:11434")
    assert is_loopback_url("http://[::1]:8000")
    assert not is_loopback_url("https://api.groq.com")
    assert not is_loopback_url("http://10.0.0.5:11434")
    assert not is_loopback_url(None)
