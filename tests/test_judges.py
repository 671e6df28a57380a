"""Judges: rubric parsing, the OpenAI-compatible backend against a loopback server (timeouts, 429,
malformed bodies), the cache that makes a resumed run send nothing twice, judge errors counted
apart, the local hf judge and bad input. The server stands in for the remote service."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support_judge_server import ScriptedServer
from support_text_lm import build_tiny_causal_lm

from mbpo_bench.cli.main import main
from mbpo_bench.evaluation.schema import Results
from mbpo_bench.evaluation.scoring import recompute_results
from mbpo_bench.judges.base import JudgeUnavailable
from mbpo_bench.judges.config import JudgeConfig
from mbpo_bench.judges.http_judge import OpenAIJudge
from mbpo_bench.judges.rubrics import Unparseable, parse_mmhal, parse_mmvet, render
from mbpo_bench.runs import RunDir

FIXTURES = Path(__file__).parent / "fixtures"
KEY_VAR = "MBPO_TEST_JUDGE_KEY"


def test_rubric_parsers_read_grades_and_refuse_the_rest() -> None:
    assert parse_mmvet("0.4") == 0.4 and parse_mmvet("1.0 (totally right)") == 1.0
    assert parse_mmvet("The score is 0.7.") == 0.7
    for bad in ("1.5", "great answer", "", "-0.1"):
        with pytest.raises(Unparseable):
            parse_mmvet(bad)
    assert parse_mmhal("No hallucination, detailed.\nRating: 6") == 6.0
    assert parse_mmhal("Rating: 2 ... on reflection Rating: 5") == 5.0  # the last one counts
    assert parse_mmhal("3") == 3.0
    for bad in ("Rating: 9", "It is fine.", "7"):
        with pytest.raises(Unparseable):
            parse_mmhal(bad)


def test_templates_fill_named_fields_only() -> None:
    text = render('{"q": "{question}"} {unknown} {response}', {"question": "Q?", "response": "R"})
    assert text == '{"q": "Q?"} {unknown} R'


def _judge(server: ScriptedServer, **kw: Any) -> OpenAIJudge:
    settings = {"base_url": server.base_url, "api_key_env": KEY_VAR, "timeout_s": 5.0,
                "max_retries": 2, **kw}  # fmt: skip
    return OpenAIJudge("judge-model", JudgeConfig(**settings))


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VAR, "test-key-not-secret")


def test_http_backend_retries_429_and_timeouts_and_keeps_malformed_bodies() -> None:
    with ScriptedServer([("429", None), ("ok", "0.7")]) as server:
        reply = _judge(server).one("grade this")
        assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("0.7", 11, 3)
        assert len(server.prompts) == 2  # the 429, then the retry
    with ScriptedServer([("sleep", 1.0), ("ok", "0.2")]) as server:
        reply = _judge(server, timeout_s=0.3).one("grade this")
        assert reply.text == "0.2" and len(server.prompts) == 2  # timed out once, retried
    with ScriptedServer([("malformed", None)]) as server:
        reply = _judge(server).one("grade this")
        assert reply.text is None and "malformed" in str(reply.error)
        assert reply.raw == "<html>not a completion</html>" and len(server.prompts) == 1
    with ScriptedServer([("500", None)]) as server, pytest.raises(JudgeUnavailable, match="rerun"):
        _judge(server, max_retries=1).one("grade this")


def test_concurrency_limit_is_respected() -> None:
    import threading
    import time

    lock = threading.Lock()
    state = {"in_flight": 0, "peak": 0}

    class Slow(ScriptedServer):
        def next_action(self, prompt: str) -> tuple[str, Any]:
            with lock:
                state["in_flight"] += 1
                state["peak"] = max(state["peak"], state["in_flight"])
            time.sleep(0.2)  # every request still open while the next ones arrive
            with lock:
                state["in_flight"] -= 1
            return super().next_action(prompt)

    with Slow([("ok", "0.5")]) as server:
        replies = dict(_judge(server, concurrency=2).judge([f"p{i}" for i in range(6)]))
    assert sorted(replies) == list(range(6)) and state["peak"] == 2


# --- end to end through `mbpo-bench eval` ------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    import torch

    from mbpo_bench.models import build_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("judges")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MBPO_BENCH_CACHE", str(root / "cache"))
        yield {"root": root, "model": build_tiny_model("llava", root / "llava"),
               "lm": build_tiny_causal_lm(root / "lm")}  # fmt: skip


def _eval(env: dict[str, Path], out: Path, tasks: str, *extra: str) -> int:
    argv = ["eval", "--model", str(env["model"]), "--tasks", tasks, "--output", str(out),
            "--data-root", str(FIXTURES), "--probes", "image,blind", "--max-new-tokens", "4",
            "--batch-size", "4", "--no-progress", *extra]  # fmt: skip
    return main(argv)


def _http(server: ScriptedServer, *extra: str) -> list[str]:
    return ["--judge", "openai:judge-model", "--judge-base-url", server.base_url,
            "--judge-api-key-env", KEY_VAR, "--judge-retries", "0", *extra]  # fmt: skip


def _grade(prompt: str) -> str:
    if "Rating" in prompt:
        return "Informative, nothing invented.\nRating: 5"
    return "I would rather not say." if "equation" in prompt else "0.5"  # v2 is ungradable


def test_judged_run_records_scores_errors_costs_and_prompt(env: dict[str, Path]) -> None:
    out = env["root"] / "judged"
    with ScriptedServer([("auto", None)], answer=_grade) as server:
        assert _eval(env, out, "mbpo_mmvet,mbpo_mmhal", *_http(server)) == 0
        sent = len(server.prompts)
    res = Results.read(out / "results.json")
    assert res == recompute_results(out)  # samples + judgements -> the same results
    vet, hal = res.tasks["mbpo_mmvet"], res.tasks["mbpo_mmhal"]
    assert sent == 12 == res.judge["requests"]  # 3 items x 2 probes x 2 tasks, once each
    assert res.judge["prompt_tokens"] == 11 * 12 and res.judge["seconds"] > 0
    # MM-Vet item v2 is a judge error: counted apart with its raw text, not scored as 0
    assert vet.judge["judge_errors"] == 2 and vet.judge["answers_judged"] == 6
    assert {e["doc_id"] for e in vet.judge["errors"]} == {"v2"}
    assert vet.judge["errors"][0]["raw"] == "I would rather not say."
    assert vet.probes["image"].metrics["mmvet_score"].value == 0.5  # the two graded items
    assert vet.probes["image"].metrics["mmvet_by_capability[math]"].value is None  # v2 only
    assert hal.probes["image"].metrics["mmhal_score"].value == 5.0
    assert hal.probes["image"].metrics["mmhal_hallucination_rate"].value == 0.0
    assert hal.probes["image"].metrics["mmhal_by_type[counting]"].value == 5.0
    assert vet.judge["judge"] == "openai:judge-model"
    assert vet.judge["prompt_source"].startswith("built-in")
    assert vet.judge["prompt_hash"].startswith("sha256:")
    for name in ("config.yaml", "command.txt", "results.json", "judgements.jsonl"):
        assert "test-key-not-secret" not in (out / name).read_text()


def test_outage_mid_run_is_resumable_and_no_request_is_sent_twice(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = env["root"] / "outage"
    script = [("ok", "0.5")] * 2 + [("500", None)]
    with ScriptedServer(script) as server:
        args = _http(server, "--judge-concurrency", "1")
        assert _eval(env, out, "mbpo_mmvet", *args) == 2
        first, port = list(server.prompts), server.port_in_use
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the weights' progress bar
    assert err.startswith("error: judge openai:judge-model") and "rerun the same command" in err
    assert not RunDir(out).finished and not (out / "results.json").exists()
    assert len((out / "judgements.jsonl").read_text().splitlines()) == 2
    with ScriptedServer([("ok", "0.5")], port=port) as server:  # the endpoint is back
        assert _eval(env, out, "mbpo_mmvet", *_http(server, "--judge-concurrency", "1")) == 0
        second = list(server.prompts)
    assert len(second) == 6 - 2 and not set(second) & set(first[:2])
    assert Results.read(out / "results.json").judge["requests"] == 6


def test_a_second_identical_run_sends_nothing(env: dict[str, Path]) -> None:
    out = env["root"] / "again"
    with ScriptedServer([("ok", "0.5")]) as server:
        assert _eval(env, out, "mbpo_mmvet", *_http(server)) == 0
        assert len(server.prompts) == 6
        (out / "results.json").unlink()  # the run is re-scored; the answers are cached
        (out / "status.json").unlink()  # as if killed before the end
        assert _eval(env, out, "mbpo_mmvet", *_http(server)) == 0
        assert len(server.prompts) == 6


def test_official_prompt_file_changes_the_hash(env: dict[str, Path], tmp_path: Path) -> None:
    prompt = tmp_path / "official.txt"
    prompt.write_text("Official rubric.\n{question} | {answer} | {response} |")
    out = env["root"] / "official"
    with ScriptedServer([("ok", "0.3")]) as server:
        args = _http(server, "--judge-prompt", f"mbpo_mmvet={prompt}")
        assert _eval(env, out, "mbpo_mmvet", "--limit", "1", *args) == 0
        assert server.prompts[0].startswith(
            "Official rubric.\nWhat is written on the sign? | STOP |"
        )
    judge = Results.read(out / "results.json").tasks["mbpo_mmvet"].judge
    assert judge["prompt_source"] == str(prompt)
    from mbpo_bench.judges.rubrics import prompt_hash

    assert judge["prompt_hash"] == prompt_hash(prompt.read_text())


def test_local_hf_judge_with_a_tiny_model(env: dict[str, Path]) -> None:
    out = env["root"] / "hf_judge"
    assert _eval(env, out, "mbpo_mmhal", "--limit", "2", "--judge", f"hf:{env['lm']}") == 0
    res = Results.read(out / "results.json")
    judge = res.tasks["mbpo_mmhal"].judge
    assert judge["judge"] == f"hf:{env['lm']}" and judge["requests"] == 4
    assert judge["completion_tokens"] > 0 and judge["prompt_tokens"] > 0
    # a random model writes no "Rating: N": every reply is a judge error, kept with its text
    assert judge["judge_errors"] == 4 and all(e["raw"] is not None for e in judge["errors"])
    assert res.tasks["mbpo_mmhal"].probes["image"].metrics["mmhal_score"].value is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("extra", "env_unset", "needle"),
    [
        (["--judge", "claude:x"], False, "unknown judge backend 'claude'"),
        (["--judge", "openai:m", "--judge-api-key-env", KEY_VAR], True, f"{KEY_VAR} is not set"),
        (
            [
                "--judge",
                "openai:m",
                "--judge-api-key-env",
                KEY_VAR,
                "--judge-base-url",
                "http://127.0.0.1:{port}/v1",
            ],
            False,
            "unreachable",
        ),
        ([], False, "no judge was given"),
        (["--judge", "hf:/no/such/judge"], False, "model folder not found"),
    ],
)
def test_bad_judge_input_is_one_line_and_overwrites_nothing(
    env: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    env_unset: bool,
    needle: str,
) -> None:
    out = env["root"] / "finished"
    if not (out / "results.json").exists():
        with ScriptedServer([("ok", "0.5")]) as server:
            assert _eval(env, out, "mbpo_mmvet", "--limit", "1", *_http(server)) == 0
    before = (out / "results.json").read_bytes()
    if env_unset:
        monkeypatch.delenv(KEY_VAR)
    extra = [e.replace("{port}", str(_closed_port())) for e in extra]
    capsys.readouterr()
    assert _eval(env, out, "mbpo_mmvet", "--limit", "1", "--overwrite", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and " — " in err
    assert (out / "results.json").read_bytes() == before


def test_missing_dataset_is_one_line(
    env: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["eval", "--model", str(env["model"]), "--tasks", "mbpo_mmhal", "--output",
                 str(tmp_path / "run"), "--data-root", str(tmp_path / "empty"),
                 "--judge", "hf:x", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no data for task mbpo_mmhal" in err
    assert not (tmp_path / "run").exists()


def test_a_refused_request_setting_stops_with_the_fix() -> None:
    with (
        ScriptedServer([("400", "max_tokens")]) as server,
        pytest.raises(JudgeUnavailable, match=r"judge\.max_tokens_param=max_completion_tokens"),
    ):
        _judge(server).one("grade this")
    with ScriptedServer([("ok", "0.5")]) as server:
        judge = _judge(server, max_tokens_param="max_completion_tokens", temperature=None)
        assert judge.one("grade this").text == "0.5"
        body = server.bodies[0]
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body
    assert "temperature" not in body
