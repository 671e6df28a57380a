"""`mbpo-bench ablate`'s plan without training: the arms are exactly the factorial plus the
baselines, overrides reach the configs that have the key, the budget is the same everywhere,
the printed commands rebuild each run's config, and bad input fails as one line."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import pytest

from mbpo_bench.ablation import ARMS, AblationConfig, build_plan, format_plan, select_arms
from mbpo_bench.ablation.commands import eval_command, mine_command, train_command
from mbpo_bench.cli.main import main
from mbpo_bench.errors import UserError

BASELINES = {"sft": "sft", "dpo-pgd": "dpo", "grpo": "grpo"}


def plan_for(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    cfg = AblationConfig(model=str(tmp_path / "base"), **kw)  # type: ignore[arg-type]
    return build_plan(cfg, tmp_path / "out")


def test_arms_are_exactly_the_factorial_plus_the_baselines() -> None:
    names = [a.name for a in ARMS]
    assert len(names) == len(set(names)) == 22
    assert {a.name: a.method for a in ARMS[:3]} == BASELINES
    mbpo = [a for a in ARMS if a.factorial]
    levels = {(a.source, a.iig_filter, a.online) for a in mbpo}
    assert levels == set(itertools.product(("pgd", "noise", "blind"), (True, False), (True, False)))
    assert len(mbpo) == 12 and mbpo[0].name == "mbpo-pgd-iig-online"  # full MBPO first
    for arm in mbpo:
        expected = [f"mining.source={arm.source}",
                    f"mining.iig_filter={'true' if arm.iig_filter else 'false'}"]  # fmt: skip
        if not arm.online:
            expected.append("hybrid.offline_ratio=1.0")
        assert list(arm.overrides) == expected, arm.name
    dpo = next(a for a in ARMS if a.name == "dpo-pgd")
    assert (dpo.source, dpo.iig_filter) == ("pgd", True)
    # issue 17: the matched controls and the twin variant, after the factorial
    assert [a.name for a in ARMS[-7:]] == ["sft-mined", "grpo-mined", "dpo-mined", "dpo-mdpo",
                                           "sft-balanced", "mbpo-twins", "sft-twins"]  # fmt: skip
    assert "hybrid.twins=true" in ARMS[-2].overrides and ARMS[-2].twins
    assert all(a.control for a in ARMS[-7:] if a.name != "mbpo-twins")


def test_plan_resolves_every_arm_and_seed_with_the_same_budget(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, seeds=[0, 3], steps=7, batch_size=4)
    assert [(r.arm.name, r.seed) for r in plan.runs] == [
        (a.name, s) for s in (0, 3) for a in ARMS
    ]  # seed-major
    for run in plan.runs:
        c = run.train_config
        assert (c.optim.steps, c.optim.batch_size, c.runtime.seed) == (7, 4, run.seed)
        assert c.model == str(tmp_path / "base")
        assert (
            run.train_dir == tmp_path / "out" / "arms" / run.arm.name / f"seed{run.seed}" / "train"
        )
        assert run.eval_config.output == str(run.train_dir.parent / "eval")
        assert run.eval_config.probes.names == ["image", "blind", "mismatched"]
        assert run.eval_config.tasks == "embedded" and run.eval_config.limit is None
        # LoRA arms are evaluated as start model + the arm's adapter
        assert run.eval_config.model == str(tmp_path / "base")
        assert run.eval_config.adapter == str(run.train_dir / "final" / "adapter")
        if run.arm.method == "mbpo":
            assert c.mining.source == run.arm.source and c.mining.iig_filter == run.arm.iig_filter
            assert c.mining.seed == run.seed
            ratio = 0.0 if run.arm.name == "grpo-mined" else 0.5 if run.arm.online else 1.0
            assert c.hybrid.offline_ratio == ratio
            assert c.preference_data == str(run.mine_dir / "pairs.parquet")
            assert c.data == "embedded"
        elif run.arm.method == "dpo":
            assert c.data == str(run.mine_dir / "pairs.parquet")
            assert c.mdpo_weight == (1.0 if run.arm.name == "dpo-mdpo" else 0.0)
        if run.arm.miner:  # a matched control: the MBPO arm's pairs, lr and schedule
            if run.arm.method == "sft":
                assert c.preference_data == str(run.mine_dir / "pairs.parquet")
                assert c.twins == (run.arm.name == "sft-twins")
                assert c.balanced == (run.arm.name == "sft-balanced")
            assert (c.optim.lr, c.optim.warmup_ratio) == (5e-5, 0.05)
            peer_name = {"sft-twins": "mbpo-twins"}.get(run.arm.name, "mbpo-pgd-iig-online")
            peer = next(r for r in plan.runs
                        if (r.arm.name, r.seed) == (peer_name, run.seed))  # fmt: skip
            assert peer.mine_dir == run.mine_dir  # the very same pairs file
        elif run.arm.method == "sft":
            assert run.mine_dir is None
    assert plan.base_eval.output == str(tmp_path / "out" / "base" / "eval")
    # mining: once per (source, filter, seed); DPO and both online levels share the PGD pairs
    assert len(plan.minings) == 2 * 7  # 6 of the factorial + the twin variant's
    seed0 = {r.arm.name: r.mine_dir for r in plan.runs if r.seed == 0}
    assert seed0["dpo-pgd"] == seed0["mbpo-pgd-iig-online"] == seed0["mbpo-pgd-iig-offline"]
    assert seed0["grpo-mined"] == seed0["dpo-mdpo"] == seed0["mbpo-pgd-iig-online"]
    assert seed0["mbpo-pgd-iig-online"] != seed0["mbpo-pgd-noiig-online"]
    for folder, mine in plan.minings.items():
        assert mine.data == "embedded" and mine.model == str(tmp_path / "base")
        assert folder.name.startswith(f"{mine.mining.source}-")


def test_overrides_reach_the_configs_that_have_the_key(tmp_path: Path) -> None:
    plan = plan_for(
        tmp_path, seeds=[0], arms=["sft", "dpo-pgd", "grpo", "mbpo-pgd-iig-online"],
        overrides=["optim.lr=1e-4", "grpo.beta=0", "mining.steps=3", "sft:optim.lr=3e-4",
                   "hybrid.offline_ratio=0.25", "eval:batch_size=4", "runtime.threads=1"],
    )  # fmt: skip
    by = {r.arm.name: r.train_config for r in plan.runs}
    assert by["sft"].optim.lr == 3e-4 and by["dpo-pgd"].optim.lr == 1e-4
    assert by["grpo"].grpo.beta == 0 and by["mbpo-pgd-iig-online"].grpo.beta == 0
    assert by["dpo-pgd"].mining.steps == 3 and by["mbpo-pgd-iig-online"].mining.steps == 3
    assert by["mbpo-pgd-iig-online"].hybrid.offline_ratio == 0.25
    assert all(c.runtime.threads == 1 for c in by.values())
    assert all(r.eval_config.batch_size == 4 for r in plan.runs)
    assert plan.base_eval.batch_size == 4
    assert all(m.runtime.threads == 1 and m.mining.steps == 3 for m in plan.minings.values())
    # the offline-only arm keeps its defining ratio whatever the online arms' ratio is
    off = plan_for(tmp_path, seeds=[0], arms=["mbpo-pgd-iig-offline"],
                   overrides=["hybrid.offline_ratio=0.25"])  # fmt: skip
    assert off.runs[0].train_config.hybrid.offline_ratio == 1.0


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.stesp=3", "not a setting of any trainer (did you mean: optim.steps"),
        ("optim.steps=3", "pass --steps"),
        ("sft:optim.batch_size=3", "pass --batch-size"),
        ("mining.source=noise", "choose arms with --arms"),
        ("runtime.seed=1", "pass --seeds"),
        ("data=embedded", "pass --data"),
        ("eval:limit=3", "pass --eval-limit"),
        ("dop:beta=0.2", "names 'dop' (did you mean: dpo?)"),
        ("sft:beta=0.2", "unknown config key 'SFTConfig.beta'"),
        ("eval:batchsize=2", "unknown config key 'eval.batchsize' (did you mean: batch_size"),
        ("optim.lr", "is not a key=value override"),
    ],
)
def test_bad_overrides_fail_before_anything_runs(
    tmp_path: Path, override: str, expected: str
) -> None:
    with pytest.raises(UserError, match=None) as info:
        plan_for(tmp_path, seeds=[0], overrides=[override])
    assert expected in str(info.value)
    assert not (tmp_path / "out").exists()


def test_arm_selection_by_name_and_pattern_and_unknown_arm() -> None:
    assert [a.name for a in select_arms(["grpo", "sft"])] == ["sft", "grpo"]  # catalogue order
    assert [a.name for a in select_arms(["mbpo-*-iig-offline"])] == [
        "mbpo-pgd-iig-offline", "mbpo-noise-iig-offline", "mbpo-blind-iig-offline",
    ]  # fmt: skip
    assert len(select_arms(None)) == 22
    with pytest.raises(UserError, match=r"unknown arm 'mbpo-pgd-iig-onlin' \(did you mean: "
                       r"mbpo-pgd-iig-online"):  # fmt: skip
        select_arms(["mbpo-pgd-iig-onlin"])


def test_cli_unknown_arm_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ablate", "--model", str(tmp_path), "--output", str(tmp_path / "o"), "--dry-run",
            "--arms", "sft,dpo"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown arm 'dpo' (did you mean: dpo-pgd") and "\n" not in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--seeds", "0,0"], "seeds repeat a seed: [0, 0]"),
        (["--lrs", "1e-5,1e-5"], "lrs repeat a learning rate: [1e-05, 1e-05]"),  # was accepted
        (["--lrs", "0"], "lrs must be positive learning rates"),
    ],
)
def test_cli_repeated_or_impossible_grid_values_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    argv = ["ablate", "--model", str(tmp_path), "--output", str(tmp_path / "o"), "--dry-run",
            *option]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and " — " in err
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "abl"
    argv = ["ablate", "--model", "runs/base", "--data", "mbpo_embedded_color", "--output",
            str(out), "--seeds", "0,1", "--arms", "sft,mbpo-noise-noiig-offline", "--steps", "5",
            "--eval-limit", "20", "--dry-run", "runtime.threads=1", "eval:batch_size=4"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    lines = text.splitlines()
    assert lines[0] == f"ablation plan -> {out}"
    assert "2 arms x 2 seeds (seeds 0,1) = 4 training runs, 2 mining runs, 5 evaluations" in text
    assert "5 steps x batch 8" in text and "limit 20; batch_size=4" in text
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads[1:] == [
        f"base  eval -> {out}/base/eval",
        f"sft  seed 0  [sft] -> {out}/arms/sft/seed0/train",
        f"mbpo-noise-noiig-offline  seed 0  [mbpo] -> {out}/arms/mbpo-noise-noiig-offline/seed0/train",
        f"sft  seed 1  [sft] -> {out}/arms/sft/seed1/train",
        f"mbpo-noise-noiig-offline  seed 1  [mbpo] -> {out}/arms/mbpo-noise-noiig-offline/seed1/train",
    ]  # fmt: skip
    assert (
        "    overrides: optim.steps=5 optim.batch_size=8 runtime.seed=1 runtime.threads=1" in lines
    )
    mbpo = [line for line in lines if "mining.source=noise" in line]
    assert len(mbpo) == 2 and all("hybrid.offline_ratio=1.0" in line for line in mbpo)
    assert all("mining.iig_filter=false" in line for line in mbpo)


def test_printed_commands_rebuild_each_runs_config(tmp_path: Path) -> None:
    from mbpo_bench.trainers.mining import MineConfig
    from mbpo_bench.trainers.table import load_trainer

    from mbpo_bench.cli import eval_cmd, train_cmd

    plan = plan_for(tmp_path, seeds=[1], eval_limit=9, steps=3,
                    overrides=["grpo.num_generations=4", "mining.eps=0.02", "eval:batch_size=2",
                               "lora.target_modules=.*q_proj$"])  # fmt: skip

    def parse(command: str) -> tuple[dict[str, str], list[str], list[str]]:
        args = shlex.split(command)[2:]
        opts, pos, sets = {}, [], []
        while args:
            a = args.pop(0)
            if a == "--set":
                sets.append(args.pop(0))
            elif a.startswith("--"):
                opts[a] = args.pop(0)
            else:
                pos.append(a)
        return opts, pos, sets

    for run in plan.runs:
        opts, pos, _ = parse(train_command(run.arm.method, run.train_config, str(run.train_dir)))
        cls, _ = load_trainer(pos[0])
        rebuilt = train_cmd.build_config(cls, model=opts["--model"], data=opts["--data"],
                                         config_file=None, overrides=pos[1:])  # fmt: skip
        assert rebuilt == run.train_config, run.label
        opts, _, sets = parse(eval_command(run.eval_config))
        rebuilt_eval = eval_cmd.build_config(
            model=opts["--model"], tasks=opts["--tasks"], output=Path(opts["--output"]),
            adapter=Path(opts["--adapter"]), probes=opts["--probes"],
            limit=int(opts["--limit"]), overrides=sets,
        )  # fmt: skip
        assert rebuilt_eval == run.eval_config, run.label
    for folder, mine in plan.minings.items():
        opts, pos, _ = parse(mine_command(mine, str(folder)))
        rebuilt_mine = train_cmd.build_config(MineConfig, model=opts["--model"],
                                              data=opts["--data"], config_file=None,
                                              overrides=pos)  # fmt: skip
        assert rebuilt_mine == mine


def test_lora_start_run_merges_each_arms_final_weights(tmp_path: Path) -> None:
    final = tmp_path / "base" / "final"
    final.mkdir(parents=True)
    (final / "info.json").write_text(json.dumps({"base": "models/tiny", "adapter": "adapter"}))
    plan = plan_for(tmp_path, seeds=[0], arms=["sft"])
    run = plan.runs[0]
    assert run.train_config.save_merged is True and run.overrides[-1] == "save_merged=true"
    assert (run.eval_config.model, run.eval_config.adapter) == (
        str(run.train_dir / "final" / "model"), None,
    )  # fmt: skip
    assert (plan.base_eval.model, plan.base_eval.adapter) == ("models/tiny", str(final / "adapter"))


def test_cli_settings_precedence_and_config_file(tmp_path: Path) -> None:
    from mbpo_bench.cli.ablate_cmd import build_config, parse_seeds

    file = tmp_path / "ablation.yaml"
    file.write_text("model: m\nseeds: [4]\nsteps: 9\noverrides: [grpo.beta=0]\n")
    cfg = build_config(config_file=file, steps=3, arms="sft, grpo", overrides=["optim.lr=1e-4"])
    assert (cfg.model, cfg.seeds, cfg.steps, cfg.arms) == ("m", [4], 3, ["sft", "grpo"])
    assert cfg.overrides == ["grpo.beta=0", "optim.lr=1e-4"]
    assert parse_seeds("0,2-4") == [0, 2, 3, 4]
    with pytest.raises(UserError, match="not a list of integers"):
        parse_seeds("a,b")
    with pytest.raises(UserError, match="no starting model"):
        build_config()
    with pytest.raises(UserError, match="seeds repeat"):
        build_config(model="m", seeds="1,1")


def test_format_plan_counts_match_the_plan(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, seeds=[0], eval_base=False)
    text = format_plan(plan)
    assert "22 arms x 1 seeds (seeds 0) = 22 training runs, 7 mining runs, 22 evaluations" in text
    assert "base  eval" not in text


def test_missing_start_model_fails_before_any_folder_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "abl"
    argv = ["ablate", "--model", str(tmp_path / "nope"), "--output", str(out), "--arms", "sft"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model folder not found" in err and err.count("\n") == 1  # no config print before it
    assert not out.exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_ablate_prints_the_resolved_config_unless_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    argv = ["ablate", "--model", "runs/base", "--data", "mbpo_embedded_color", "--output",
            str(tmp_path / "abl"), "--seeds", "3", "--arms", "sft", "--dry-run",
            *(["--quiet"] if quiet else [])]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("ablation plan -> ")  # the plan alone on stdout
    if quiet:
        assert captured.err == ""
    else:
        assert "model: runs/base" in captured.err and "- 3" in captured.err


def test_the_plan_and_report_name_the_evaluation_split(tmp_path: Path) -> None:
    from mbpo_bench.ablation.report import eval_split

    plan = plan_for(tmp_path, seeds=[0], arms=["sft"])
    assert "(test split)" in format_plan(plan) and eval_split(plan) == "test"
    dev = plan_for(tmp_path, seeds=[0], arms=["sft"], overrides=["eval:split=dev"])
    assert "(dev split)" in format_plan(dev) and eval_split(dev) == "dev"


def test_an_lr_grid_names_each_arm_per_lr_and_lr_from_takes_the_dev_choice(
    tmp_path: Path,
) -> None:
    import json

    grid = plan_for(tmp_path, seeds=[0], arms=["sft-mined", "dpo-mdpo"], lrs=[1e-5, 2e-4])
    by = {r.arm.name: r.train_config.optim.lr for r in grid.runs}
    assert by == {"sft-mined@lr1e-05": 1e-5, "sft-mined@lr0.0002": 2e-4,
                  "dpo-mdpo@lr1e-05": 1e-5, "dpo-mdpo@lr0.0002": 2e-4}  # fmt: skip
    assert len(grid.minings) == 1  # every lr trains on the same mined pairs
    dev = tmp_path / "dev"
    dev.mkdir()
    choice = {"lr": 2e-4, "scores": {"1e-05": 0.1, "0.0002": 0.2}, "seeds": 1, "split": "dev",
              "source": str(dev)}  # fmt: skip
    (dev / "lr_choice.json").write_text(json.dumps({"sft-mined": choice}))
    test = plan_for(tmp_path, seeds=[0], arms=["mbpo-pgd-iig-online", "sft-mined", "dpo-mdpo"],
                    lr_from=str(dev))  # fmt: skip
    by = {r.arm.name: r.train_config.optim.lr for r in test.runs}
    assert by == {"mbpo-pgd-iig-online": 5e-5, "sft-mined": 2e-4, "dpo-mdpo": 5e-5}
    (dev / "lr_choice.json").write_text(json.dumps({"sft-mined": {**choice, "split": "test"}}))
    with pytest.raises(UserError, match="chose on split test — choose on dev"):
        plan_for(tmp_path, seeds=[0], arms=["sft-mined"], lr_from=str(dev))
    with pytest.raises(UserError, match="does not exist"):
        plan_for(tmp_path, seeds=[0], arms=["sft-mined"], lr_from=str(tmp_path / "none"))


def test_a_control_alone_reads_its_mbpo_arms_mining_and_optimizer_overrides(
    tmp_path: Path,
) -> None:
    """`sft-mined` mines and schedules as its MBPO arm: `mbpo:mining.*` / `mbpo:optim.*` reach it
    with no MBPO arm selected; `mbpo:hybrid.*`, which it never reads, is still refused."""
    plan = plan_for(tmp_path, seeds=[0], arms=["sft-mined"],
                    overrides=["mbpo:mining.eps=0.1", "mbpo:optim.warmup_ratio=0.2"])  # fmt: skip
    (mine,) = plan.minings.values()
    assert mine.mining.eps == 0.1
    assert plan.runs[0].train_config.optim.warmup_ratio == 0.2
    with pytest.raises(UserError, match="overrides for mbpo but no selected arm trains with it"):
        plan_for(tmp_path, seeds=[0], arms=["sft-mined"],
                 overrides=["mbpo:mining.eps=0.1", "mbpo:hybrid.online_pool=mined"])  # fmt: skip
    with pytest.raises(UserError, match="overrides for dpo but no selected arm trains with it"):
        plan_for(tmp_path, seeds=[0], arms=["sft-mined"], overrides=["dpo:beta=0.2"])
