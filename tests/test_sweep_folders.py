"""A sweep's job folders (``config/rules.py``): a job finds its folder by what it trains, a new
one is named by its swept overrides, and ``train.py -m`` refuses, before Hydra launches or writes
anything, a sweep whose folder holds jobs with other settings.

In process, no training: each folder holds the config Hydra composed for its job
(``.hydra/config.yaml``) and its overrides, as a real sweep leaves them (``test_sweeps.py``
trains real sweeps, extends one and refuses a conflicting one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_with_hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from sr_lightning.config.rules import prepare_command_line
from sr_lightning.config.sweep_folders import jobs_held
from sr_lightning.runs.folder import NAME_MAX, job_folder_name
from sr_lightning.runs.job import job_folders

# experiment=ablation_bn_smoke sweeps model.net.norm=batch,none; +seeds=<n> sweeps the seed
COMMAND = ["experiment=ablation_bn_smoke", "model.net.n_resblocks=1", "model.net.n_feats=8"]
GRID = [(norm, seed) for norm in ("batch", "none") for seed in (0, 1)]  # +seeds=two, job order


def job_overrides(norm: str, seed: int, *more: str, seeds: str = "two") -> list[str]:
    """A job's overrides as Hydra's basic sweeper makes them: swept values first."""
    return [f"model.net.norm={norm}", f"seed={seed}", *COMMAND, f"+seeds={seeds}", *more]


def write_held_job(folder: Path, overrides: list[str]) -> None:
    """What Hydra writes into a job folder first: ``.hydra/config.yaml`` (the composed
    config, unresolved) and ``.hydra/overrides.yaml``; and a finished job's summary."""
    full = compose_with_hydra("train", overrides)
    with open_dict(full):
        del full["hydra"]
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(full, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    (folder / "summary.json").write_text('{"status": "completed"}\n')


def subdir(sweep: Path, overrides: list[str]) -> str:
    """``hydra.sweep.subdir`` of a job of a sweep into ``sweep``, as Hydra resolves it when
    it starts the job (``${sr_sweep_job:}``)."""
    full = compose_with_hydra("train", [*overrides, f"hydra.sweep.dir={sweep}"])
    return str(OmegaConf.select(full, "hydra.sweep.subdir"))


def files(root: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_more_seeds_find_the_finished_jobs_in_their_folders_numbered_ones_too(tmp_path):
    """A 2-seed sweep of an older version (folders 0-3, by job number) given a third seed:
    each old job is found in its folder by its config, whatever its number; the new jobs get
    folders named by their swept overrides. The check before the launch lets it through."""
    sweep = tmp_path / "sweep"
    for num, (norm, seed) in enumerate(GRID):
        write_held_job(sweep / str(num), job_overrides(norm, seed))
    placed = {
        (norm, seed): subdir(sweep, job_overrides(norm, seed, seeds="three"))
        for norm in ("batch", "none")
        for seed in (0, 1, 2)
    }
    assert placed == {
        ("batch", 0): "0",
        ("batch", 1): "1",
        ("batch", 2): "norm-batch+seed-2",
        ("none", 0): "2",
        ("none", 1): "3",
        ("none", 2): "norm-none+seed-2",
    }
    # where and how a job runs is not what it trains: the same job, the same folder
    elsewhere = ["data.root=/elsewhere", "data.num_workers=3", "logger=none"]
    assert subdir(sweep, job_overrides("none", 1, *elsewhere, seeds="three")) == "3"
    argv = ["train.py", "-m", *COMMAND, "+seeds=three", f"hydra.sweep.dir={sweep}"]
    assert prepare_command_line("train", argv) == argv


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("trainer.max_steps=5", "trainer.max_steps=-1 (this command: 5)"),
        ("model.net.n_feats=16", "model.net.n_feats=8 (this command: 16)"),
    ],
)
def test_a_sweep_with_other_settings_is_refused_before_anything_is_written(
    tmp_path, capsys, change, said
):
    """The same sweep folder, another number of updates or another network: one message that
    names a folder and the key with both values, exit code 2, every file as it was."""
    sweep = tmp_path / "sweep"
    for norm, seed in GRID:
        write_held_job(sweep / f"norm-{norm}+seed-{seed}", job_overrides(norm, seed))
    before = files(tmp_path)
    argv = ["train.py", "-m", *COMMAND, "+seeds=three", change, f"hydra.sweep.dir={sweep}"]
    with pytest.raises(SystemExit) as exit_:
        prepare_command_line("train", argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: hydra.sweep.dir={sweep}: {sweep / 'norm-batch+seed-0'} ")
    assert said in line and "Nothing was launched or written" in line
    assert "new hydra.sweep.dir" in line
    assert files(tmp_path) == before
    assert sorted(p.name for p in sweep.iterdir()) == [f"norm-{n}+seed-{s}" for n, s in GRID]


def test_folders_by_job_number_of_ones_own_are_checked_before_the_launch(tmp_path, capsys):
    """``hydra.sweep.subdir=${hydra.job.num}`` (Hydra's default, the layout of issue 24): a
    third seed maps job #2 (norm=batch, seed=2) onto folder 2 (norm=none, seed=0); refused
    before Hydra rewrites that folder's ``.hydra/``, naming it and both keys."""
    sweep = tmp_path / "sweep"
    for num, (norm, seed) in enumerate(GRID):
        write_held_job(sweep / str(num), job_overrides(norm, seed))
    before = files(tmp_path)
    by_number = "hydra.sweep.subdir=${hydra.job.num}"
    argv = ["train.py", "-m", *COMMAND, "+seeds=three", by_number, f"hydra.sweep.dir={sweep}"]
    with pytest.raises(SystemExit) as exit_:
        prepare_command_line("train", argv)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert f"{sweep / '2'} holds another job than job #2 of this command" in line
    assert (
        "seed=0 (this command: 2)" in line and "model.net.norm=none (this command: batch)" in line
    )
    assert files(tmp_path) == before
    argv = ["train.py", "-m", *COMMAND, "+seeds=two", by_number, f"hydra.sweep.dir={sweep}"]
    assert prepare_command_line("train", argv) == argv  # the same sweep again: its folders


def test_a_job_does_not_run_in_a_folder_another_job_holds(tmp_path):
    """Where the check before the launch did not run (Hydra started from Python, or with
    ``--config-dir``): the job's own folder rule refuses a folder named as it is that holds
    another job, before Hydra creates or writes anything."""
    sweep = tmp_path / "sweep"
    write_held_job(sweep / "norm-batch+seed-0", job_overrides("batch", 0))
    before = files(tmp_path)
    with pytest.raises(Exception, match="trainer.max_steps=-1 \\(this command: 5\\)") as raised:
        subdir(sweep, job_overrides("batch", 0, "trainer.max_steps=5"))
    assert f"{sweep / 'norm-batch+seed-0'} holds another job" in str(raised.value)
    assert files(tmp_path) == before


def test_a_folder_being_written_is_no_job_to_match(tmp_path):
    """A job started beside this one (a parallel launcher) may be writing its config: an empty
    or cut ``.hydra/config.yaml`` matches nothing (an empty one would match every job)."""
    sweep = tmp_path / "sweep"
    write_held_job(sweep / "norm-batch+seed-0", job_overrides("batch", 0))
    (sweep / "norm-none+seed-0" / ".hydra").mkdir(parents=True)
    (sweep / "norm-none+seed-0" / ".hydra" / "overrides.yaml").write_text("[]\n")
    (sweep / "norm-none+seed-0" / ".hydra" / "config.yaml").write_text("task_name: x\n")
    held = {h.folder.name: h.config for h in jobs_held(sweep)}
    assert held["norm-none+seed-0"] is None and held["norm-batch+seed-0"]
    assert subdir(sweep, job_overrides("none", 1)) == "norm-none+seed-1"


def test_job_folder_names_work_as_typed_and_list_in_seed_order(tmp_path):
    """``norm-batch+seed-0``: no character a command line would have to quote (Hydra reads
    ``=`` and ``,`` in a value as syntax), so ``ckpt_path=<sweep>/<job>/...`` works as typed;
    the folders list numbered ones (older sweeps) first, then names with seed 2 before 10."""
    assert job_folder_name({"norm": "batch", "seed": "0"}) == "norm-batch+seed-0"
    assert job_folder_name({"benchmarks": "[Set14,Set5]", "lr": "1e-3"}) == (
        "benchmarks-_Set14_Set5_+lr-1e-3"
    )
    long = job_folder_name({f"key{i}": "value" * 4 for i in range(10)})
    assert len(long) == NAME_MAX and long != job_folder_name({"key0": "value" * 4})
    for name in ("norm-batch+seed-0", "benchmarks-_Set14_Set5_+lr-1e-3", long):
        path = f"outputs/sweep/{name}/checkpoints/last.ckpt"
        (override,) = OverridesParser.create().parse_overrides([f"ckpt_path={path}"])
        assert override.value() == path and not override.is_sweep_override()
    for name in ("10", "2", "seed-10", "seed-2", ".submitit", "not_a_job"):
        (tmp_path / name).mkdir()
    for name in ("seed-10", "seed-2"):
        (tmp_path / name / "summary.json").write_text("{}")
    assert [p.name for p in job_folders(tmp_path)] == ["2", "10", "seed-2", "seed-10"]
