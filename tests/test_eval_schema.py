"""results.json schema: round trip, versioning, one-line validation errors."""

from __future__ import annotations

import json

import pytest

from mbpo_bench.evaluation.schema import (
    SCHEMA_VERSION,
    BootstrapSettings,
    GenerationSettings,
    Metric,
    ModelInfo,
    ProbeResult,
    Results,
    SchemaError,
    SkippedItem,
    TaskResult,
)


def example() -> Results:
    acc = Metric(0.75, 40, 0.6, 0.875, True)
    task = TaskResult(
        task="embedded_colour",
        version="1.0",
        prompt_template="{question}\nAnswer with one word.",
        verifier="short_word",
        generation=GenerationSettings(max_new_tokens=8, until=["\n"]),
        n_items=40,
        items_skipped=[SkippedItem("17", "item embedded_colour/17: image x.png cannot be decoded")],
        probes={"image": ProbeResult("image", 40, {"accuracy": acc})},
        balance={"visual_reliance_blind": Metric(0.2, 40, 0.05, 0.35, True)},
    )
    return Results(
        schema_version=SCHEMA_VERSION,
        model=ModelInfo("runs/base", "llava", "sha256:0123", None, None, "float32", "cpu"),
        probes=["image", "blind"],
        bootstrap=BootstrapSettings(1000, 0.95, 0),
        tasks={"embedded_colour": task},
        packages={"torch": "2.15.0", "lmms-eval": None},
        git_sha=None,
        python="3.11.9",
        device="cpu",
        wall_time_s=3.5,
        compute_time_s=2.0,
        samples_per_s=40.0,
        n_samples=80,
        items_skipped=1,
        config={"model": "runs/base", "limit": None},
    )


def test_round_trip() -> None:
    res = example()
    assert Results.from_json(res.to_json()) == res


def test_undefined_values_are_null_not_nan() -> None:
    res = example()
    text = res.to_json()
    assert "NaN" not in text
    assert json.loads(text)["packages"]["lmms-eval"] is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema_version=0), "schema_version 0 is not"),
        (
            lambda d: d["tasks"]["embedded_colour"]["probes"]["image"]["metrics"][
                "accuracy"
            ].update(n="40"),
            "tasks.embedded_colour.probes.image.metrics.accuracy.n: expected an integer",
        ),
        (lambda d: d["model"].pop("id"), "model: missing field 'id'"),
        (lambda d: d["tasks"]["embedded_colour"].update(extra=1), "unknown field 'extra'"),
        (
            lambda d: d["tasks"]["embedded_colour"]["generation"].update(do_sample="no"),
            "generation.do_sample: expected true or false",
        ),
    ],
)
def test_validation_errors_are_one_line_and_name_the_field(mutate, message) -> None:  # type: ignore[no-untyped-def]
    data = example().to_dict()
    mutate(data)
    with pytest.raises(SchemaError) as err:
        Results.from_dict(data, source="results.json")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_read_missing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchemaError, match="results file not found"):
        Results.read(tmp_path / "results.json")
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(SchemaError, match="not valid JSON"):
        Results.read(tmp_path / "results.json")
