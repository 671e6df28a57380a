"""The task registry: discovery, names and suites, user tasks, items, data errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbpo_bench.data.embedded import EmbeddedConfig
from mbpo_bench.data.registry import (
    data_available,
    get_task,
    list_tasks,
    load_items,
    resolve_tasks,
    suites,
    training_items,
    validate_tasks,
)
from mbpo_bench.errors import UserError

SMALL = EmbeddedConfig(seed=5, n_train=60, n_eval_per_cell=6)

USER_TASK = """\
task: {name}
dataset_path: text
dataset_kwargs: {{data_files: {{eval: README.md}}}}
test_split: eval
process_docs: !function mbpo_bench.tasks.common.docs_for_{name}
process_results: !function mbpo_bench.tasks.common.process_results
metric_list:
  - metric: accuracy
    aggregation: !function mbpo_bench.tasks.metrics.accuracy
    higher_is_better: true
metadata:
  version: 2
  verifier: number
  prompt: "Q: {{question}}"
  data: {{source: embedded, kind: count}}
"""


def _user_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir(parents=True)
    (folder / f"{name}.yaml").write_text(USER_TASK.format(name=name))
    return folder


# The built-in suites, in their order (the table that used to live in the registry; the order is
# the order `--tasks SUITE` evaluates and trains on them, so it must not change by accident).
BUILTIN_SUITES = {
    "embedded": ["mbpo_embedded_existence", "mbpo_embedded_color", "mbpo_embedded_count"],
    "general": ["mbpo_mme", "mbpo_mmstar", "mbpo_ai2d", "mbpo_mmvp", "mbpo_realworldqa"],
    "hallucination": [
        "mbpo_pope_random", "mbpo_pope_popular", "mbpo_pope_adversarial",
        "mbpo_hallusionbench", "mbpo_amber_discriminative", "mbpo_chair",
    ],
    "paper": [
        "mbpo_mme", "mbpo_mmstar", "mbpo_ai2d", "mbpo_mmvet", "mbpo_mmbench_en", "mbpo_chair",
        "mbpo_mmhal",
    ],
}  # fmt: skip


def test_builtin_tasks_and_suites_resolve() -> None:
    names = {spec.name for spec in list_tasks()}
    assert all(name.startswith("mbpo_") for name in names)
    assert suites() == BUILTIN_SUITES
    specs = resolve_tasks("embedded, mbpo_embedded_color")
    assert [s.name for s in specs] == BUILTIN_SUITES["embedded"]
    assert {s.origin for s in list_tasks()} == {"built-in"}


def _with_suite(folder: Path, name: str, line: str) -> None:
    path = folder / f"{name}.yaml"
    path.write_text(path.read_text().replace("  version: 2\n", f"  version: 2\n{line}"))


def test_a_new_builtin_task_joins_its_suite_from_its_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silent failure (a) of issue 14: a list in the registry used to win over the YAML, so a new
    built-in task with `suites: [hallucination]` was not run by `--tasks hallucination`."""
    import shutil

    import mbpo_bench.data.registry as registry

    builtin = tmp_path / "tasks"
    shutil.copytree(registry.builtin_tasks_dir(), builtin, ignore=shutil.ignore_patterns("*.py*"))
    (builtin / "mbpo_new.yaml").write_text(USER_TASK.format(name="mbpo_new"))
    _with_suite(builtin, "mbpo_new", "  suites: [hallucination]\n")
    monkeypatch.setattr(registry, "builtin_tasks_dir", lambda: builtin)
    registry._catalogue.cache_clear()
    try:
        names = [s.name for s in resolve_tasks("hallucination")]
        assert names == [*BUILTIN_SUITES["hallucination"], "mbpo_new"]
        assert get_task("mbpo_new").origin == "built-in"
    finally:
        registry._catalogue.cache_clear()


def test_a_user_task_joins_a_builtin_suite_in_its_order(tmp_path: Path) -> None:
    """Silent failure (a), second half: a user task naming a built-in suite used to be ignored."""
    folder = _user_folder(tmp_path, "my_count")
    _with_suite(folder, "my_count", "  suites: [embedded]\n")
    assert [s.name for s in resolve_tasks("embedded", include_paths=[folder])] == [
        *BUILTIN_SUITES["embedded"],
        "my_count",
    ]
    first = _user_folder(tmp_path / "first", "my_first")  # the catalogue is cached per folder
    _with_suite(first, "my_first", "  suites: [embedded]\n  suite_order: 0\n")
    names = [s.name for s in resolve_tasks("embedded", include_paths=[first])]
    assert names == ["my_first", *BUILTIN_SUITES["embedded"]]
    assert get_task("my_count", include_paths=[folder]).origin == str(folder.resolve())
    assert [s.name for s in resolve_tasks("embedded")] == BUILTIN_SUITES["embedded"]


def test_suite_order_must_be_an_integer(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, "my_count")
    _with_suite(folder, "my_count", "  suite_order: first\n")
    with pytest.raises(
        UserError, match=r"my_count\.yaml: metadata\.suite_order must be an integer"
    ):
        list_tasks(include_paths=[folder])


@pytest.mark.parametrize("value", ["[]", "[image_id, 3]", "{a: b}", "'a,b'"])
def test_cluster_must_be_a_label_or_a_list_of_labels(tmp_path: Path, value: str) -> None:
    folder = _user_folder(tmp_path, "my_count")
    _with_suite(folder, "my_count", f"  cluster: {value}\n")
    with pytest.raises(UserError, match=r"my_count\.yaml: metadata\.cluster must be a meta label"):
        list_tasks(include_paths=[folder])


def test_a_cluster_list_is_kept_joined(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, "my_count")
    _with_suite(folder, "my_count", "  cluster: [category, image_id]\n")
    assert get_task("my_count", include_paths=[folder]).cluster == "category,image_id"


def test_validate_refuses_functions_naming_another_task(tmp_path: Path) -> None:
    """Silent failure (b) of issue 14: `process_docs: docs_for_<other task>` passed validation
    and fed lmms-eval the other task's items."""
    folder = _user_folder(tmp_path, "my_count")
    assert validate_tasks([folder])[1] == []
    path = folder / "my_count.yaml"
    path.write_text(path.read_text().replace("docs_for_my_count", "docs_for_mbpo_embedded_count"))
    n_ok, problems = validate_tasks([folder])
    assert n_ok == len(list_tasks()) + 1 and len(problems) == 1
    assert str(path) in problems[0] and "names task 'mbpo_embedded_count'" in problems[0]
    assert "use docs_for_my_count" in problems[0]


def test_unknown_task_suggests() -> None:
    with pytest.raises(UserError, match="did you mean: mbpo_embedded_color"):
        get_task("mbpo_embeded_color")


def test_spec_fields() -> None:
    spec = get_task("mbpo_embedded_existence")
    assert spec.verifier == "yesno" and spec.close_ended
    assert spec.max_new_tokens == 8
    assert "counter_prior_gap" in spec.metrics and "embedded" in spec.suites
    assert spec.yaml_path.name == "mbpo_embedded_existence.yaml"


def test_user_task_from_include_path(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, "my_count")
    spec = get_task("my_count", include_paths=[folder])
    assert spec.version == "2"
    items = load_items(spec, limit=3, cache_dir=tmp_path / "c", embedded=SMALL)
    assert len(items) == 3 and items[0].question.startswith("Q: How many")


def test_user_task_name_clash_is_refused(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, "mbpo_embedded_count")
    with pytest.raises(UserError, match="clashes with the task"):
        list_tasks(include_paths=[folder])


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    with pytest.raises(UserError, match=r"bad\.yaml"):
        list_tasks(include_paths=[tmp_path])


def test_embedded_items_carry_meta(tmp_path: Path) -> None:
    items = load_items("mbpo_embedded_existence", cache_dir=tmp_path, embedded=SMALL)
    assert len(items) == 12
    item = items[1]
    assert item.verifier == "yesno" and item.target in ("yes", "no")
    assert {"prior", "kind", "negative_split", "prior_answer", "question_raw"} <= set(item.meta)
    assert item.question.endswith("Answer yes or no.")
    assert item.load_image().size == (48, 48)


def test_training_items_from_suite(tmp_path: Path) -> None:
    items = training_items("embedded", limit=4, cache_dir=tmp_path, embedded=SMALL)
    assert len(items) == 12
    assert {i.verifier for i in items} == {"yesno", "multiple_choice", "number"}
    assert all(i.doc_id.split("-")[1] == "train" for i in items)


def test_real_task_without_data_names_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mbpo_bench.data.sources as sources

    monkeypatch.setattr(sources, "_hub_snapshot", lambda hub_id: None)  # ignore any HF cache
    spec = get_task("mbpo_pope_random")
    assert not data_available(spec, data_root=tmp_path)
    with pytest.raises(UserError, match="MBPO_BENCH_DATA") as info:
        load_items(spec, data_root=tmp_path)
    assert str(tmp_path / "pope") in str(info.value)
    assert "\n" not in str(info.value)


def test_real_task_has_no_training_split() -> None:
    with pytest.raises(UserError, match="no training split"):
        load_items("mbpo_mme", split="train")


def _copy_fixture(tmp_path: Path, bench: str) -> Path:
    import shutil

    root = tmp_path / "data"
    shutil.copytree(Path(__file__).parent / "fixtures" / bench, root / bench)
    return root


def test_malformed_row_names_row_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    root = _copy_fixture(tmp_path, "mmvp")
    path = root / "mmvp" / "data" / "train-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[2]["Options"] = "no options here"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(UserError, match="malformed row 2 in") as info:
        load_items("mbpo_mmvp", data_root=root)
    assert str(path) in str(info.value)


def test_unreadable_image_names_item_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mbpo_bench.data.images import BadImageError

    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    root = _copy_fixture(tmp_path, "pope")
    path = root / "pope" / "data" / "test-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row["image"] = {"bytes": b"not an image", "path": "x.png"}
    pq.write_table(pa.Table.from_pylist(rows), path)
    item = load_items("mbpo_pope_random", data_root=root)[0]
    with pytest.raises(BadImageError, match=f"item mbpo_pope_random/{item.doc_id}") as info:
        item.load_image()
    assert str(item.image_path) in str(info.value)


def test_entry_point_task_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    import mbpo_bench.data.registry as registry

    folder = _user_folder(tmp_path, "plugin_count")

    class _EP:
        name = "my_plugin"

        def load(self) -> str:
            return str(folder)

    real = metadata.entry_points
    monkeypatch.setattr(
        registry.importlib_metadata,
        "entry_points",
        lambda **kw: [_EP()] if kw.get("group") == "mbpo_bench.tasks" else real(**kw),
    )
    registry._catalogue.cache_clear()
    try:
        assert get_task("plugin_count").yaml_path.parent == folder
        assert get_task("plugin_count").origin == "plugin my_plugin"
    finally:
        registry._catalogue.cache_clear()


def test_real_items_from_fixtures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    fixtures = Path(__file__).parent / "fixtures"
    hb = load_items("mbpo_hallusionbench", data_root=fixtures)
    assert len(hb) == 4  # the non_image split file is not read
    rwqa = load_items("mbpo_realworldqa", data_root=fixtures)
    assert [i.verifier for i in rwqa] == ["multiple_choice", "number", "short_word"]
    mmvp = load_items("mbpo_mmvp", data_root=fixtures, limit=2)
    assert mmvp[0].options == ("Open", "Closed") and mmvp[0].meta["pair_id"] == 0
    assert "A. Open\nB. Closed" in mmvp[0].question
    assert mmvp[0].load_image().size == (8, 8)


def test_a_suite_declared_in_user_yaml_resolves(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, "my_count")
    _with_suite(folder, "my_count", "  suites: [my_suite]\n")
    assert [s.name for s in resolve_tasks("my_suite", include_paths=[folder])] == ["my_count"]
    with pytest.raises(UserError, match="unknown task 'no_such_suite'"):
        resolve_tasks("no_such_suite", include_paths=[folder])


def test_include_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mbpo_bench.data.registry import INCLUDE_PATH_ENV, add_include_paths

    folder = _user_folder(tmp_path, "my_env_count")
    monkeypatch.setenv(INCLUDE_PATH_ENV, "")  # restored after the test, whatever we add
    with pytest.raises(UserError, match="unknown task"):
        get_task("my_env_count")
    add_include_paths([folder])
    assert get_task("my_env_count").name == "my_env_count"
    with pytest.raises(UserError, match="task folder not found"):
        add_include_paths([tmp_path / "missing"])


def test_old_task_folder_variable_still_works_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$MBPO_BENCH_TASK_PATHS (the lmms-eval glue's old variable) is read like
    $MBPO_BENCH_INCLUDE_PATH for one release, with a one-line warning, once per process."""
    import mbpo_bench.data.registry as registry

    folder = _user_folder(tmp_path, "my_old_env_count")
    monkeypatch.setenv(registry.INCLUDE_PATH_ENV, "")
    monkeypatch.setenv(registry.OLD_INCLUDE_PATH_ENV, str(folder))
    registry._warn_old_variable.cache_clear()
    assert get_task("my_old_env_count").name == "my_old_env_count"
    get_task("my_old_env_count")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MBPO_BENCH_TASK_PATHS is deprecated" in err[0]
    assert "use $MBPO_BENCH_INCLUDE_PATH" in err[0]


def test_lmms_eval_process_docs_finds_a_user_task_through_the_include_path_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What lmms-eval calls for `process_docs: !function ...docs_for_<task>`: a user task is
    found through $MBPO_BENCH_INCLUDE_PATH (what `--backend lmms-eval` sets from
    --include-path), with the same items as the registry's."""
    pytest.importorskip("datasets")
    from mbpo_bench.tasks import common

    import mbpo_bench.data.registry as registry

    folder = _user_folder(tmp_path, "my_docs_count")
    (tmp_path / "embedded.yaml").write_text("seed: 5\nn_train: 60\nn_eval_per_cell: 6\n")
    monkeypatch.setenv(registry.EMBEDDED_CONFIG_ENV, str(tmp_path / "embedded.yaml"))
    monkeypatch.setenv("MBPO_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(registry.INCLUDE_PATH_ENV, str(folder))
    docs = common.docs_for_my_docs_count(None)
    items = load_items("my_docs_count", include_paths=[folder])
    assert [d["doc_id"] for d in docs] == [it.doc_id for it in items] and len(items) > 0
    assert {d["task"] for d in docs} == {"my_docs_count"}


def test_train_and_mine_refuse_a_missing_include_path(tmp_path: Path) -> None:
    from mbpo_bench.cli.main import main

    for argv in (["mine", "--model", "m", "--output", str(tmp_path / "o")],
                 ["train", "sft", "--model", "m", "--output", str(tmp_path / "o")]):  # fmt: skip
        assert main([*argv, "--include-path", str(tmp_path / "nope")]) != 0
        assert not (tmp_path / "o").exists()
