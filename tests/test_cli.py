"""The mtrl-famo command line on real MT10/MT1 with tiny budgets: train, eval, resume, bad input."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY, assert_usage_error, run_cli
from mtrl_famo.aggregators import AGGREGATORS
from test_envs import MT10_TASKS
from mtrl_famo.config import AGGREGATOR_NAMES


def test_train_writes_events_checkpoint_and_results(tiny_mt10_run):
    results = json.loads((tiny_mt10_run / "results.json").read_text())
    assert set(results["tasks"]) == MT10_TASKS and set(results["success_rate"]) == MT10_TASKS
    assert results["step"] == 1000 and results["finished"] is True
    assert results["aggregator"] == "mean" and results["benchmark"] == "mt10"
    assert all(0.0 <= v <= 1.0 for v in results["success_rate"].values())
    assert (tiny_mt10_run / "checkpoint.pt").is_file()
    assert (tiny_mt10_run / "config.yaml").is_file()
    events = list((tiny_mt10_run / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    evals = [json.loads(line) for line in (tiny_mt10_run / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [500, 1000]


def test_tensorboard_has_per_task_scalars(tiny_mt10_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_mt10_run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in ("reach-v3", "window-close-v3"):
        for prefix in ("charts/success_rate", "losses/critic", "losses/actor", "losses/alpha", "alpha"):
            assert f"{prefix}/{name}" in tags, f"{prefix}/{name}"
    assert {"charts/mean_success_rate", "charts/SPS", "aggregator/critic/cos_sim_mean"} <= tags


def test_eval_prints_every_task_and_writes_json(tiny_mt10_run):
    proc = run_cli("eval", f"run_dir={tiny_mt10_run}", "eval.episodes=2", "device=cpu")
    assert proc.returncode == 0, proc.stderr
    for name in MT10_TASKS:
        assert name in proc.stdout
    result = json.loads((tiny_mt10_run / "eval.json").read_text())
    assert result["episodes"] == 2 and set(result["success_rate"]) == MT10_TASKS


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    run_dir = tmp_path / "killed"
    args = [*TINY, "train.total_steps=400000", "train.warmup_steps=200000", "train.checkpoint_every=500",
            "eval.every=100000", f"run_dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "mtrl_famo.cli", "train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir / "checkpoint.pt"
    deadline = time.time() + 300  # generous: start-up alone takes long on a loaded 2-core machine
    while time.time() < deadline:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=False)["step"] >= 1500:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "the run wrote no checkpoint within 300 s"
    saved_step = torch.load(checkpoint, weights_only=False)["step"]
    assert 1500 <= saved_step < 200000
    # Resume with a smaller budget so the test ends soon; learning starts right away.
    total = saved_step + 300
    proc = run_cli("train", f"run_dir={run_dir}", f"train.total_steps={total}", "train.warmup_steps=0")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {run_dir} from step {saved_step}" in proc.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["step"] == total and results["finished"]
    assert torch.load(checkpoint, weights_only=False)["step"] == total


def test_single_task_mt1_run(tmp_path):
    run_dir = tmp_path / "mt1"
    proc = run_cli("train", *TINY, "benchmark=mt1", "benchmark.env_name=reach-v3", "train.total_steps=300",
                   "eval.every=300", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == ["reach-v3"] and results["benchmark"] == "mt1-reach-v3"


@pytest.mark.parametrize("args, expected", [
    (["benchmark=mt99"], "benchmark='mt99' is unknown; allowed: mt1, mt10, mt50"),
    (["aggregator=adam"], "aggregator='adam' is unknown; allowed: " + ", ".join(sorted(AGGREGATORS))),
    (["benchmark=mt1", "benchmark.env_name=reach-v9"], "benchmark.env_name='reach-v9' is not a Meta-World v3 task"),
    (["train.total_steps=-5"], "train.total_steps=-5 must be an integer >= 1"),
    (["train.total_steps=1.5"], "train.total_steps=1.5"),
    (["train.total_steps=abc"], "train.total_steps=abc"),
    (["train.bogus=1"], "unknown config key 'train.bogus'; allowed keys under 'train': total_steps"),
    (["aggregator=famo", "aggregator.c=0.5"], "unknown config key 'aggregator.c'"),
    (["device=tpu"], "device='tpu'; allowed: auto, cpu, cuda, cuda:N"),
    (["train.compile=fast"], "train.compile='fast'; allowed: none, task_gradients, all"),
    (["lots"], "'lots' is not a key=value override"),
])
def test_bad_train_input_is_one_clear_line_and_exit_2(tmp_path, args, expected):
    run_dir = tmp_path / "never"
    assert_usage_error(run_cli("train", *args, f"run_dir={run_dir}"), expected)
    assert not run_dir.exists()


def test_eval_without_checkpoint_is_refused(tmp_path):
    proc = run_cli("eval", f"run_dir={tmp_path}")
    assert proc.returncode == 2 and "holds no checkpoint" in proc.stderr


def test_corrupt_checkpoint_is_reported_and_the_run_left_alone(tmp_path, tiny_mt10_run):
    import shutil

    run_dir = tmp_path / "corrupt"
    shutil.copytree(tiny_mt10_run, run_dir)
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    for command in (["eval"], ["train", "train.total_steps=2000"]):
        proc = run_cli(*command, f"run_dir={run_dir}", "device=cpu")
        assert proc.returncode == 2, proc.stderr
        assert "corrupt" in proc.stderr and str(checkpoint) in proc.stderr
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert before == after


def test_resume_refuses_to_change_what_the_run_is(tiny_mt10_run):
    proc = run_cli("train", f"run_dir={tiny_mt10_run}", "benchmark=mt50")
    assert proc.returncode == 2
    assert "cannot resume it with 'benchmark=mt50'" in proc.stderr


def test_help_lists_config_keys():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    assert "train.total_steps" in proc.stdout and f"aggregator={{{','.join(sorted(AGGREGATORS))}}}" in proc.stdout


def test_diverging_training_stops_with_the_first_bad_step_and_keeps_the_checkpoint(tmp_path):
    """A huge critic learning rate blows the losses up in the first update (step 101)."""
    run_dir = tmp_path / "diverged"
    proc = run_cli("train", *TINY, "benchmark=mt1", "benchmark.env_name=reach-v3", "agent.critic_lr=1e30",
                   "train.warmup_steps=100", "train.total_steps=400", "eval.every=100", f"run_dir={run_dir}")
    assert proc.returncode == 1
    last_line = proc.stderr.strip().splitlines()[-1]
    assert "mtrl-famo train: error: non-finite losses/" in last_line and "first at step 101" in last_line
    assert f"the last checkpoint in {run_dir} is intact" in last_line
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["step"] == 100
    for network in ("actor", "critic"):
        assert all(torch.isfinite(t).all() for t in state["agent"][network].values())
    assert not (run_dir / "results.json").exists()
