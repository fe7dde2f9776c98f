"""What a new user and fault injection found (issue 15): bad input is one line and exit 2 with nothing
written; Ctrl-C, SIGTERM, a full disk and a kill leave a run that resumes with nothing lost beyond its last
checkpoint."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import TINY, assert_usage_error, run_cli

MT1 = ["benchmark=mt1", "benchmark.env_name=reach-v3"]


@pytest.mark.parametrize("args, expected", [
    (["train.warmup_steps=null", "train.total_steps=20000"],
     "train.warmup_steps=40000 (default 4000 x 10 tasks) is not below train.total_steps=20000"),
    (["seed=9223372036854775808"], "seed=9223372036854775808 must be an integer in [0, 2147483647]"),
    (["aggregator=cagrad", "aggregator.c=-1"], "aggregator.c=-1.0 must be >= 0"),
    (["aggregator=famo", "aggregator.w_lr=-5"], "aggregator.w_lr=-5.0 must be > 0"),
    (["benchmark=mt1"], "benchmark=mt1 needs benchmark.env_name"),
    (["train.buffer_size=100"], "train.buffer_size=100 holds 10 transitions per task, less than one episode"),
    (["train.per_task_batch=3000"], "train.per_task_batch=3000 is more than the 2000 transitions per task"),
    (["aggregator.apply_to=[]"], "aggregator.apply_to=[] leaves mean nothing to combine"),
    (["train.torch_threads=512"], "train.torch_threads=512 is more than the"),
    (["agent.actor_lr=inf"], "agent.actor_lr=inf must be a finite number"),
    pytest.param(["device=cuda"], "device='cuda' but CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_bad_train_input_is_refused_before_anything_is_written(tmp_path, args, expected):
    run_dir = tmp_path / "never"
    assert_usage_error(run_cli("train", *TINY, "train.total_steps=1000", *args, f"run_dir={run_dir}"), expected)
    assert not run_dir.exists()


def test_a_run_dir_that_is_a_file_or_under_one_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for run_dir, expected in ((afile, "is a file; choose a folder"), (afile / "sub", "which is a file")):
        assert_usage_error(run_cli("train", *TINY, "train.total_steps=1000", f"run_dir={run_dir}"), expected)
    assert afile.read_text() == "x"


def test_sweep_refusals_come_before_the_first_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    common = ["train", "--multirun", f"hydra.sweep.dir={sweep_dir}", *TINY, "train.total_steps=300"]
    assert_usage_error(run_cli(*common, "seed=0,1", f"run_dir={tmp_path / 'one'}"),
                       "run_dir= would send all 2 jobs of the sweep to one folder")
    long = [f"agent.hidden_sizes=[{','.join(['32'] * 40)}]", f"video.tasks=[{','.join(['reach-v3'] * 12)}]"]
    assert_usage_error(run_cli(*common, "seed=0,1", *long), "bytes, over the 255 a file name may have")
    assert not sweep_dir.exists() and not (tmp_path / "one").exists()


def _files(run_dir):
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_resume_refuses_a_new_buffer_size_and_another_benchmarks_checkpoint(tiny_mt10_run, tmp_path):
    before = _files(tiny_mt10_run)
    assert_usage_error(run_cli("train", f"run_dir={tiny_mt10_run}", "train.buffer_size=40000"),
                       "cannot resume it with 'train.buffer_size=40000'")
    assert _files(tiny_mt10_run) == before
    # An MT10 checkpoint under an MT1 config: refused from the checkpoint, before any env is built.
    run_dir = tmp_path / "mixed"
    shutil.copytree(tiny_mt10_run, run_dir)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("name: mt10", "name: mt1").replace("env_name: null",
                                                                                     "env_name: reach-v3"))
    before = _files(run_dir)
    proc = run_cli("train", f"run_dir={run_dir}", "train.total_steps=2000")
    assert_usage_error(proc, "was trained on tasks")
    assert _files(run_dir) == before


def test_eval_on_a_missing_cuda_is_one_line(tiny_mt10_run):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_usage_error(run_cli("eval", f"run_dir={tiny_mt10_run}", "device=cuda"), "CUDA is not available here")


def test_a_second_train_on_a_locked_run_folder_is_refused(tmp_path):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    with open(run_dir / ".lock", "w") as f:  # as a running `mtrl-famo train` holds it
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242")
        f.flush()
        proc = run_cli("train", *TINY, *MT1, "train.total_steps=300", f"run_dir={run_dir}")
    assert_usage_error(proc, "is in use by another mtrl-famo train (pid 4242)")
    assert [p.name for p in run_dir.iterdir()] == [".lock"]


def test_checkpoint_holds_only_the_filled_buffer_rows_and_is_written_before_results(tiny_mt10_run):
    state = torch.load(tiny_mt10_run / "checkpoint.pt", weights_only=False)
    buffer = state["buffer"]["storage"]
    assert buffer.shape[1] == state["buffer"]["size"] == 100 < state["buffer"]["capacity"]
    assert buffer.untyped_storage().nbytes() == buffer.numel() * 4  # not the whole [tasks, capacity, row] storage
    assert (tiny_mt10_run / "checkpoint.pt").stat().st_mtime_ns <= (tiny_mt10_run / "results.json").stat().st_mtime_ns


def test_a_run_killed_between_final_checkpoint_and_results_finishes_on_restart(tiny_mt10_run, tmp_path):
    run_dir = tmp_path / "no-results"
    shutil.copytree(tiny_mt10_run, run_dir)
    (run_dir / "results.json").unlink()
    (run_dir / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # what a kill mid-write leaves
    proc = run_cli("train", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stdout and "from step 1000" in proc.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["finished"] and results["step"] == 1000
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_a_checkpoint_and_say_how_to_resume(tmp_path, sig, code):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "stopped"
    args = [*TINY, *MT1, "train.total_steps=2000000", "train.checkpoint_every=500", "eval.every=1000000",
            "train.log_every=100", f"run_dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "mtrl_famo.cli", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = run_dir / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoint.exists():
        time.sleep(0.2)
    time.sleep(6)  # past the first checkpoint (step 500), in the learning phase long enough for the ETA line
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"training {run_dir}: mt1-reach-v3 (1 task), aggregator=mean, device=cpu" in out
    assert "learning at" in out and "steps/s: about" in out  # the ETA, from the learning phase
    assert "warning: 2,000,000 steps on a CPU" in err and "experiment=mt10_cpu" in err
    last = err.strip().splitlines()[-1]
    assert f"stopped by {signal.Signals(sig).name} at step" in last
    assert f"Resume with: mtrl-famo train run_dir={run_dir}" in last
    stopped = torch.load(checkpoint, weights_only=False)["step"]
    assert stopped > 500 and stopped % 500 != 0 or stopped > 1000  # saved at the stop, not a periodic one
    assert stopped == int(last.split(" at step ")[1].split(";")[0].replace(",", ""))

    total = stopped + 150
    proc = run_cli("train", f"run_dir={run_dir}", f"train.total_steps={total}")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {run_dir} from step {stopped}" in proc.stdout
    assert json.loads((run_dir / "results.json").read_text())["step"] == total
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("charts/SPS")]
    assert steps == sorted(set(steps))  # no step logged twice across the stop


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_temp_file(tmp_path):
    run_dir = tmp_path / "full"

    def small_disk():  # files may not grow beyond 64 kB: the first checkpoint cannot be written
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    proc = subprocess.run([sys.executable, "-m", "mtrl_famo.cli", "train", *TINY, *MT1, "train.total_steps=600",
                           "train.warmup_steps=100", "train.checkpoint_every=200", "eval.every=100000",
                           f"run_dir={run_dir}"], capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "cannot write the checkpoint" in last and "at step 200" in last and "no checkpoint was written" in last
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "checkpoint.pt").exists() and not list(run_dir.glob(".*.tmp"))


def test_a_broken_mujoco_gl_does_not_stop_commands_that_render_nothing(tmp_path, tiny_mt10_run):
    # A real failed initialisation: EGL asked for while PyOpenGL is pinned to another platform.
    env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
    run_dir = tmp_path / "gl"
    for args in (["train", *TINY, *MT1, "train.total_steps=300", f"run_dir={run_dir}"],
                 ["eval", f"run_dir={tiny_mt10_run}", "eval.episodes=1"]):
        proc = subprocess.run([sys.executable, "-m", "mtrl_famo.cli", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr


def test_eval_shows_what_it_evaluates_and_its_progress(tiny_mt10_run):
    proc = run_cli("eval", f"run_dir={tiny_mt10_run}", "eval.episodes=1")
    assert proc.returncode == 0, proc.stderr
    assert f"evaluating {tiny_mt10_run} (step 1,000): 1 episodes x 10 tasks on cpu" in proc.stdout
    assert "10/10" in proc.stderr  # the bar of finished episodes


def test_help_lists_every_aggregator_option_and_the_composed_defaults():
    proc = run_cli("train", "--help")
    assert proc.returncode == 0
    for text in ("aggregator.c=0.9", "aggregator.w_lr=0.025", "aggregator.gamma=0.001",
                 "experiment={moore_mt10,mt10_cpu,mtmhsac_mt10,mtmhsac_mt10_v1,paco_mt50,pcgrad_mt10,pcgrad_mt10_v1,"
                 "softmodules_mt10}",
                 "benchmark.cagrad_c=0.9", "aggregator.seed=0"):
        assert text in proc.stdout, text
    assert "cagrad_c=0.5" not in proc.stdout
