"""Sweeps through Hydra's multirun: a local parallel grid, restart = resume, the cluster launcher config."""

import json
from pathlib import Path

from conftest import TINY, run_cli
from mtrl_famo.aggregators import AGGREGATORS


def _sweep(sweep_dir: Path, *extra: str):
    return run_cli("train", "--multirun", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={sweep_dir}", "aggregator=mean,famo", *TINY, "eval.every=300", *extra)


def _runs(sweep_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep_dir.iterdir() if p.is_dir()}


def test_local_multirun_makes_complete_runs_and_a_restart_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = _sweep(sweep_dir, "train.total_steps=300")
    assert proc.returncode == 0, proc.stderr
    runs = _runs(sweep_dir)
    assert len(runs) == 2
    for name, run in runs.items():
        results = json.loads((run / "results.json").read_text())
        assert results["finished"] and results["step"] == 300
        assert f"aggregator={results['aggregator']}" in name
        assert (run / "checkpoint.pt").is_file() and list((run / "tb").iterdir())

    # As if the sweep was killed after famo's last checkpoint, before its results.
    famo_run = next(run for name, run in runs.items() if "aggregator=famo" in name)
    (famo_run / "results.json").unlink()
    proc = _sweep(sweep_dir, "train.total_steps=300")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {famo_run} from step 300" in proc.stdout
    assert "already finished at step 300, skipped" in proc.stdout
    assert json.loads((famo_run / "results.json").read_text())["step"] == 300

    # A larger budget (not part of the run folder name) continues both runs.
    proc = _sweep(sweep_dir, "train.total_steps=500")
    assert proc.returncode == 0, proc.stderr
    assert _runs(sweep_dir).keys() == runs.keys()
    for run in runs.values():
        assert f"resuming {run} from step 300" in proc.stdout
        assert json.loads((run / "results.json").read_text())["step"] == 500


def test_bad_value_in_a_sweep_stops_before_any_job(tmp_path):
    sweep_dir = tmp_path / "bad"
    proc = run_cli("train", "--multirun", f"hydra.sweep.dir={sweep_dir}", "aggregator=mean,adam", *TINY)
    assert proc.returncode == 2
    assert "aggregator='adam' is unknown; allowed: " + ", ".join(sorted(AGGREGATORS)) in proc.stderr
    assert not sweep_dir.exists()


def test_cluster_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from mtrl_famo.config import register_schemas
    from mtrl_famo.runconfig import config_dir

    register_schemas()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 1 and launcher.partition == "gpu"
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_experiment_preset_sets_the_cpu_study(tmp_path):
    from mtrl_famo.runconfig import compose_config

    cfg = compose_config(["experiment=mt10_cpu", "aggregator=cagrad"])
    assert cfg.benchmark.name == "mt10" and cfg.agent.hidden_sizes == [256, 256]
    assert cfg.train.per_task_batch == 32 and cfg.train.total_steps == 500_000
    assert cfg.aggregator.c == 0.9
