"""A stopped population resumes as the same run (issue 23), split from test_resume.py so that the two
halves run on different test workers; the helpers are test_resume.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import assert_usage_error, run_cli
from test_resume import RUN, TOTAL, assert_same_run, stopped_run

# ---------------------------------------------------------------------------- populations
POP = [*RUN, "aggregator=pcgrad", "seeds=[0,1]"]


@pytest.fixture(scope="module")
def straight_population(tmp_path_factory) -> Path:
    pop_dir = tmp_path_factory.mktemp("pop") / "straight"
    proc = run_cli("train", *POP, f"run_dir={pop_dir}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"training {pop_dir} (seeds [0, 1]): mt10 (10 tasks), aggregator=pcgrad, device=cpu" in out
    assert f"seed 1 ({pop_dir / 's1'}):\n| task" in out and "| reach-v3" in out  # each member's per-task table
    for seed in (0, 1):
        member = pop_dir / f"s{seed}"
        assert (member / "checkpoint.pt").stat().st_mtime_ns <= (member / "results.json").stat().st_mtime_ns
    return pop_dir


@pytest.mark.parametrize("how, at, resumed_from", [("sigterm", 33, 330), ("kill", 400, 200)])
def test_a_stopped_population_resumes_bit_for_bit(straight_population, tmp_path, how, at, resumed_from):
    import shlex

    pop_dir = tmp_path / "stopped"
    proc = stopped_run(how, at, *POP, f"run_dir={pop_dir}")
    if how == "sigterm":
        assert proc.returncode == 143, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert f"stopped by SIGTERM at step 330; every member's checkpoint saved in {pop_dir}" in last
        command = last.split("Resume with: ")[1]
        assert command == f"mtrl-famo train 'seeds=[0,1]' run_dir={pop_dir}"
    else:
        assert proc.returncode == -9, proc.stderr
        command = f"mtrl-famo train seeds=[0,1] run_dir={pop_dir}"
    proc = run_cli(*shlex.split(command)[1:])
    assert proc.returncode == 0, proc.stderr
    assert f"resuming the population of seeds [0, 1] from step {resumed_from}" in proc.stdout
    for seed in (0, 1):
        assert_same_run(straight_population / f"s{seed}", pop_dir / f"s{seed}")


def test_extending_a_finished_population_is_the_longer_population(straight_population, tmp_path):
    extended = tmp_path / "extended"
    proc = run_cli("train", *POP, "train.total_steps=400", f"run_dir={extended}")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("train", "seeds=[0,1]", f"run_dir={extended}", f"train.total_steps={TOTAL}")
    assert proc.returncode == 0, proc.stderr
    assert "resuming the population of seeds [0, 1] from step 400" in proc.stdout
    for seed in (0, 1):
        assert_same_run(straight_population / f"s{seed}", extended / f"s{seed}")


def test_a_second_population_on_a_folder_in_use_is_refused(tmp_path):
    import fcntl

    for locked in ("pop", "pop/s1"):  # the population's folder, or one member's (a single run resuming it)
        folder = tmp_path / locked
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write("4242")
            f.flush()
            proc = run_cli("train", *POP, f"run_dir={tmp_path / 'pop'}")
        assert_usage_error(proc, f"run_dir={str(folder)!r} is in use by another mtrl-famo train (pid 4242)")
        assert not (tmp_path / "pop" / "s0" / "config.yaml").exists()


def test_a_population_warns_on_a_long_cpu_budget_and_times_the_learning_phase(tmp_path):
    pop_dir = tmp_path / "long"
    proc = stopped_run("eta", 0, *POP, "train.total_steps=2000000", "train.warmup_steps=100",
                       "eval.every=1000000", "train.checkpoint_every=1000000", f"run_dir={pop_dir}")
    assert proc.returncode == 143, proc.stderr
    assert "warning: 2,000,000 steps on a CPU" in proc.stderr
    eta = [line for line in proc.stdout.splitlines() if line.startswith("learning at")]
    assert len(eta) == 1 and "steps/s: about" in eta[0]  # once, from the learning phase's speed


