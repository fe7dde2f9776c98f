"""Hard knocks, second round (issue 26): what a new user, fault injection and a reference check found.

Every test runs the real CLI on real Meta-World envs at tiny scale (``conftest.TINY``)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, assert_usage_error, run_cli

MT1 = ["benchmark=mt1", "benchmark.env_name=reach-v3"]
TINY_MT1 = [*TINY, *MT1, "train.total_steps=300"]


def cli_here(capsys, *args: str) -> subprocess.CompletedProcess:
    """``mtrl-famo ARGS`` in this process (for refusals: no second import of torch and Meta-World)."""
    from mtrl_famo.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["mtrl-famo", *args], code, out, err)


def run_cli_with_umask(umask: int, *args: str) -> subprocess.CompletedProcess:
    def set_umask():
        os.umask(umask)

    return subprocess.run([sys.executable, "-m", "mtrl_famo.cli", *args], capture_output=True, text=True,
                          timeout=600, preexec_fn=set_umask)


def _compact(path: Path) -> None:
    """The checkpoint's replay rows are stored alone, not with the whole preallocated buffer."""
    state = torch.load(path, weights_only=False)
    rows = state["buffer"]["storage"]
    assert rows.shape[1] == state["buffer"]["size"] < state["buffer"]["capacity"]
    assert rows.untyped_storage().nbytes() == rows.numel() * 4
    capacity_bytes = rows.shape[0] * state["buffer"]["capacity"] * rows.shape[2] * 4
    assert path.stat().st_size < capacity_bytes / 4  # 20000-row capacity: 6.7 MB, the rows 0.1 MB


@pytest.fixture(scope="module")
def mt1_run(tmp_path_factory) -> Path:
    """A finished tiny MT1 run, written under umask 027."""
    run_dir = tmp_path_factory.mktemp("mt1") / "run"
    proc = run_cli_with_umask(0o027, "train", *TINY_MT1, f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_a_single_task_checkpoint_holds_only_its_filled_rows(mt1_run):
    _compact(mt1_run / "checkpoint.pt")


def test_a_populations_member_checkpoints_hold_only_their_filled_rows_and_follow_the_umask(tmp_path):
    run_dir = tmp_path / "pop"
    proc = run_cli_with_umask(0o022, "train", *TINY_MT1, "seeds=[0,1]", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    for member in ("s0", "s1"):
        _compact(run_dir / member / "checkpoint.pt")
        assert stat.S_IMODE((run_dir / member / "checkpoint.pt").stat().st_mode) == 0o644


def test_every_file_of_a_run_has_the_mode_the_users_umask_gives(mt1_run):
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in mt1_run.iterdir() if p.is_file()}
    assert {"checkpoint.pt", "config.yaml", "evals.jsonl", "results.json"} <= set(modes)
    assert set(modes.values()) == {0o640}, modes  # 0666 & ~027, as open(path, "w") would give


@pytest.mark.parametrize("override, expected", [
    ("+agent.actor_lrr=0.1", "unknown config key 'agent.actor_lrr' (in '+agent.actor_lrr=0.1'); allowed keys under "
                             "'agent': hidden_sizes, actor_lr"),
    ("++agent.actor_lrr=0.1", "unknown config key 'agent.actor_lrr' (in '++agent.actor_lrr=0.1')"),
    ("+foo=1", "unknown config key 'foo' (in '+foo=1'); allowed keys: benchmark, aggregator, agent, train"),
    ("++aggregator.c=0.5", "unknown config key 'aggregator.c' (in '++aggregator.c=0.5'); allowed keys under "
                           "'aggregator': name, apply_to"),
])
def test_unknown_keys_are_refused_whatever_the_plus_prefix(tmp_path, capsys, override, expected):
    run_dir = tmp_path / "never"
    assert_usage_error(cli_here(capsys, "train", *TINY_MT1, override, f"run_dir={run_dir}"), expected)
    assert not run_dir.exists()


def test_a_sweep_refuses_unknown_plus_keys_before_its_first_job_and_plus_plus_still_sets_known_ones(tmp_path):
    from mtrl_famo.runconfig import compose_config

    assert compose_config(["++agent.actor_lr=0.1", *TINY_MT1]).agent.actor_lr == 0.1
    sweep = tmp_path / "sweep"
    assert_usage_error(run_cli("train", "--multirun", f"hydra.sweep.dir={sweep}", *TINY_MT1, "seed=0,1",
                               "+agent.actor_lrr=0.1"), "unknown config key 'agent.actor_lrr'")
    assert not sweep.exists()


@pytest.mark.parametrize("args, expected", [
    (["train.updates_per_step=0"], "train.updates_per_step=0 must be an integer >= 1"),
    (["train.updates_per_step=5000"], "train.updates_per_step=5000 is too many; allowed: 1 to 1000"),
    (["train.total_steps=99999999999999999999999"],
     "train.total_steps=99999999999999999999999 is too long a run; allowed: at most 10,000,000,000"),
    (["train.total_steps=null", "train.steps_per_task=999999999999"],
     "train.steps_per_task=999999999999 x 1 tasks = 999999999999 steps is too long a run"),
    # More memory than any machine here has: refused from an estimate, before anything is allocated.
    (["agent.hidden_sizes=[100000,100000]"], "agent.hidden_sizes=[100000, 100000] with train.buffer_size=20000 "
                                             "needs about 560.3 GB (networks with gradients and Adam 560.3 GB"),
    (["train.buffer_size=100000000000"], "train.buffer_size=100000000000 needs about 34,400.0 GB"),
    (["agent.hidden_sizes=[20000,20000]", "seeds=[0,1,2,3,4,5,6,7]"], "x 8 members), more than the"),
])
def test_bad_train_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, expected):
    run_dir = tmp_path / "never"
    assert_usage_error(cli_here(capsys, "train", *TINY_MT1, *args, f"run_dir={run_dir}"), expected)
    assert not run_dir.exists()


SUBDIR = "hydra.sweep.subdir=seed_${seed}"  # the TINY overrides make too long a folder name


def _sweep_job(sweep_dir: Path, seed: int) -> Path:
    return sweep_dir / f"seed_{seed}"


def test_a_sweep_worker_takes_the_single_runs_threads_and_a_broken_mujoco_gl_does_not_stop_it(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = dict(os.environ, MUJOCO_GL="garbage")
    proc = subprocess.run([sys.executable, "-m", "mtrl_famo.cli", "train", "--multirun", f"hydra.sweep.dir={sweep_dir}",
                           *TINY_MT1, "seed=0,1", SUBDIR], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for seed in (0, 1):
        assert (_sweep_job(sweep_dir, seed) / "results.json").is_file()
    # Up to 4 cores a run takes 1 torch thread (runtime.configure_threads); one basic-launcher job at a
    # time has all the cores: 1 thread here too (it had cpu_count / n_jobs).
    if (os.cpu_count() or 1) <= 4:
        assert proc.stdout.count("device=cpu, 1 thread;") == 2, proc.stdout


def test_a_sweep_dir_that_is_a_file_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_usage_error(run_cli("train", "--multirun", f"hydra.sweep.dir={afile}", *TINY_MT1, "seed=0,1"),
                       f"hydra.sweep.dir='{afile}' is a file; choose a folder")
    assert afile.read_text() == "x"


def test_one_ctrl_c_stops_the_whole_sweep_after_the_jobs_checkpoint(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "mtrl_famo.cli", "train", "--multirun",
                             f"hydra.sweep.dir={sweep_dir}", *TINY, *MT1, "train.total_steps=2000000",
                             "train.checkpoint_every=500", "eval.every=1000000", "seed=0,1", SUBDIR],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = _sweep_job(sweep_dir, 0)
    deadline = time.time() + 300
    while time.time() < deadline and not (first / "checkpoint.pt").exists():
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert f"SIGINT stopped the sweep in {first} after its checkpoint; no further job was started" in last
    assert "Resume the sweep with the same command" in last
    assert torch.load(first / "checkpoint.pt", weights_only=False)["step"] > 500  # saved at the stop
    assert not _sweep_job(sweep_dir, 1).exists()


@pytest.mark.parametrize("command, damage, expected", [
    ("train", {"config.yaml": "benchmark: [unclosed\n  x: {"},
     "config.yaml is not valid YAML at line 2 (expected ',' or ']', but got ':'): the run's config is damaged"),
    ("eval", {"config.yaml": "benchmark: [unclosed\n  x: {"}, "config.yaml is not valid YAML at line 2"),
    ("train", {"config.yaml": "- 1\n"}, "config.yaml is not a mtrl-famo run config (no 'aggregator' section)"),
    ("train", {"results.json": '{"step": 3'},
     "results.json is not valid JSON (Expecting ',' delimiter: line 1 column 11 (char 10)): the file is damaged; "
     "delete it and run again"),
    ("train", {"results.json": None, "evals.jsonl": '{"step": 3'},
     "evals.jsonl line 1 is not valid JSON (Expecting ',' delimiter: line 1 column 11 (char 10)): the file is "
     "damaged; fix or delete that line to resume"),
])
def test_a_damaged_run_file_is_one_line_naming_it(mt1_run, tmp_path, capsys, command, damage, expected):
    import shutil

    run_dir = tmp_path / "damaged"
    shutil.copytree(mt1_run, run_dir)
    for name, text in damage.items():
        (run_dir / name).unlink() if text is None else (run_dir / name).write_text(text)
    args = [f"run_dir={run_dir}"] + (["eval.episodes=1"] if command == "eval" else [])
    assert_usage_error(cli_here(capsys, command, *args), f"{run_dir}/{expected}")


def _mount_tmpfs(where: Path, size: int) -> bool:
    where.mkdir()
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


def test_a_real_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """On a small tmpfs the first checkpoint fits and the second does not: while it is written the first
    still takes its space (the write goes to a temporary file renamed over it)."""
    args = [*TINY, *MT1, "agent.hidden_sizes=[256,256]", "train.warmup_steps=100", "train.checkpoint_every=200",
            "eval.every=100000"]
    probe = tmp_path / "probe"
    assert run_cli("train", *args, "train.total_steps=200", f"run_dir={probe}").returncode == 0
    size = (probe / "checkpoint.pt").stat().st_size  # the checkpoint at step 200 (about 1 MB)
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, int(size * 1.5)):
        pytest.skip("needs root and mount (a real small tmpfs; RLIMIT_FSIZE is no full disk)")
    try:
        run_dir = disk / "run"
        proc = run_cli("train", *args, "train.total_steps=600", f"run_dir={run_dir}")
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last == (f"mtrl-famo train: error: [Errno 28] cannot write the checkpoint {run_dir}/checkpoint.pt "
                        f"at step 400 (No space left on device); the last checkpoint is intact")
        assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 200
        assert not list(run_dir.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_train_help_lists_the_sweep_keys_and_every_camera_of_the_scene(capsys):
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World envs)
    import mujoco

    proc = cli_here(capsys, "train", "--help")
    assert proc.returncode == 0
    for text in ("hydra/launcher={local,slurm}", "hydra.sweep.dir=sweeps/", "hydra.sweep.subdir=",
                 "hydra.launcher.n_jobs=2", "hydra.launcher.timeout_min=720"):
        assert text in proc.stdout
    env = gym.make("Meta-World/MT1", env_name="reach-v3")
    model = env.unwrapped.model
    cameras = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)}
    env.close()
    camera_line = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("video.camera="))
    listed = {c.strip() for c in camera_line.split("Meta-World camera:")[1].split(",")}
    assert listed == cameras, camera_line  # gripperPOV was missing
    video = cli_here(capsys, "video", "--help").stdout
    video_line = next(line for line in video.splitlines() if line.lstrip().startswith("camera"))
    assert {c.strip().replace(" (default)", "") for c in video_line.split("camera:")[1].split(",")} == cameras


def test_eval_help_lists_evals_keys_only_and_a_bad_episode_count_names_its_key(mt1_run, capsys):
    proc = cli_here(capsys, "eval", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: mtrl-famo eval run_dir=DIR")
    keys = [line.split("=")[0].strip() for line in proc.stdout.splitlines() if line.startswith("  ")]
    assert keys == ["run_dir", "eval.episodes", "device"]  # not train's keys
    assert_usage_error(cli_here(capsys, "eval", f"run_dir={mt1_run}", "eval.episodes=abc"),
                       "bad value in 'eval.episodes=abc': Value 'abc' of type 'str' could not be converted to Integer")


def test_video_checks_its_output_folder_and_frame_size_before_rendering(mt1_run, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = cli_here(capsys, "video", f"run_dir={mt1_run}", f"out={afile}")
    assert_usage_error(proc, f"out='{afile}' is a file; choose a folder")
    assert "rendering" not in proc.stdout and afile.read_text() == "x"
    for key in ("width", "height"):
        assert_usage_error(cli_here(capsys, "video", f"run_dir={mt1_run}", f"{key}=100000"),
                           f"{key}=100000 is too large a frame; allowed: 1 to 4096 pixels")
        assert_usage_error(cli_here(capsys, "train", *TINY_MT1, f"video.{key}=100000", "video.every=100",
                                    f"run_dir={tmp_path / 'never'}"),
                           f"video.{key}=100000 is too large a frame; allowed: 1 to 4096 pixels")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args, expected", [
    (["benchmark=mt1", "benchmark.env_name=reach-v3", "benchmark.max_episode_steps=40"],
     "holds a run with benchmark.max_episode_steps=50; cannot resume it with 'benchmark.max_episode_steps=40' (only"),
    (["benchmark=mt1"], "holds a run with benchmark.env_name=reach-v3; cannot resume it with 'benchmark=mt1' "
                        "(which sets benchmark.env_name=null)"),
    (["aggregator=famo"], "holds a run with aggregator.name=mean; cannot resume it with 'aggregator=famo' "
                          "(which sets aggregator.name=famo)"),
])
def test_the_resume_refusal_names_the_override_that_changes_the_run(mt1_run, capsys, args, expected):
    assert_usage_error(cli_here(capsys, "train", f"run_dir={mt1_run}", *args), expected)


def test_a_resume_whose_checkpoint_has_other_network_widths_is_one_line(mt1_run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "widths"
    shutil.copytree(mt1_run, run_dir)
    (run_dir / "results.json").unlink()
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("  - 32\n", "  - 64\n"))
    expected = (f"checkpoint of '{run_dir}' does not fit its config.yaml (agent.hidden_sizes=[64, 64]): size "
                f"mismatch for net.0.weight: copying a param with shape torch.Size([32, 40]) from checkpoint")
    assert_usage_error(cli_here(capsys, "train", f"run_dir={run_dir}"), expected)
    assert_usage_error(cli_here(capsys, "eval", f"run_dir={run_dir}", "eval.episodes=1"), expected)


def _copies(run: Path, root: Path, n: int) -> list[Path]:
    """``n`` copies of a real run, group ``i`` with ``agent.actor_lr`` = its own value (group ``n - 1``:
    ``agent.target_entropy=null`` versus -2.0 elsewhere)."""
    import shutil

    dirs = []
    for i in range(n):
        d = root / f"g{i}"
        shutil.copytree(run, d)
        text = (d / "config.yaml").read_text()
        assert "actor_lr: 0.0003" in text and "target_entropy: null" in text
        text = text.replace("actor_lr: 0.0003", f"actor_lr: {round((i + 1) * 1e-4, 6)}")
        if i < n - 1:
            text = text.replace("target_entropy: null", "target_entropy: -2.0")
        (d / "config.yaml").write_text(text)
        dirs.append(d)
    return dirs


@pytest.mark.parametrize("n", [2, 5, 10])
def test_report_groups_get_short_labels_keyed_in_report_md_and_the_plots_keep_their_axes(tiny_mt10_run, tmp_path, n):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from mtrl_famo.report.command import build_report, write_report
    from mtrl_famo.report.plots import plot_heatmap, plot_learning_curves, plot_per_task_curves

    _copies(tiny_mt10_run, tmp_path / "runs", n)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = write_report([tmp_path / "runs"], tmp_path / "out")
        (groups,) = build_report([tmp_path / "runs"])[0].values()
        figures = [plot_learning_curves("mt10", groups), plot_heatmap("mt10", groups),
                   plot_per_task_curves("mt10", groups)]
        for fig in figures:
            fig.canvas.draw()
    assert not [w for w in caught if "layout" in str(w.message)], [str(w.message) for w in caught]
    labels = [g.short for g in groups]
    assert labels == [f"mean {chr(ord('A') + i)}" for i in range(n)]
    last = groups[-1]
    assert last.settings == f"agent.actor_lr={round(n * 1e-4, 6)}, agent.target_entropy=null"  # null, not None
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("|")]
    assert [last.short, last.settings, "default"] in [r[:3] for r in rows]  # the key from label to settings
    for fig in figures:
        width = fig.get_size_inches()[0] * fig.dpi
        renderer = fig.canvas.get_renderer()
        for ax in (a for a in fig.axes if a.get_visible() and a.get_label() != "<colorbar>"):
            box = ax.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= width + 1  # inside the figure
        texts = [t for t in [fig._suptitle, *[a.title for a in fig.axes]] if t is not None and t.get_text()]
        legends = [*fig.legends, *[a.get_legend() for a in fig.axes if a.get_legend() is not None]]
        for title in texts:
            for legend in legends:  # no legend over a title
                assert not title.get_window_extent(renderer).overlaps(legend.get_window_extent(renderer))
    curves_ax = figures[0].axes[0]
    assert curves_ax.get_window_extent().width > 0.5 * figures[0].get_size_inches()[0] * figures[0].dpi
    heat_ax = figures[1].axes[0]
    ticks = [t.get_window_extent(figures[1].canvas.get_renderer()) for t in heat_ax.get_xticklabels()]
    assert all(not a.overlaps(b) for a, b in zip(ticks, ticks[1:]))  # column labels apart
    title = heat_ax.title.get_window_extent(figures[1].canvas.get_renderer())
    assert all(not title.overlaps(t) for t in ticks)


def test_a_run_with_a_truncated_log_is_left_out_with_one_warning_and_named(tiny_mt10_run, tmp_path):
    good, bad = _copies(tiny_mt10_run, tmp_path / "runs", 2)
    log = (bad / "evals.jsonl").read_text()
    (bad / "evals.jsonl").write_text(log[: len(log) - 40])  # cut inside its last record
    fresh = tmp_path / "runs" / "fresh"
    fresh.mkdir()
    (fresh / "config.yaml").write_text((good / "config.yaml").read_text())  # started, no evaluation yet
    out = tmp_path / "out"
    proc = run_cli("report", str(tmp_path / "runs"), "--out", str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    warnings = sorted(line for line in proc.stderr.splitlines() if line.startswith("warning:"))
    assert len(warnings) == 2, proc.stderr
    assert warnings[0] == f"warning: left out {fresh}: no evaluation logged yet"
    assert warnings[1].startswith(f"warning: left out {bad}: {bad}/evals.jsonl line 2 is not valid JSON")
    report = (out / "report.md").read_text()
    assert "1 run (" in report
    assert f"- `{bad}`: {bad}/evals.jsonl line 2 is not valid JSON" in report
    assert f"- `{fresh}`: no evaluation logged yet" in report


def test_the_learning_speed_line_is_a_line_of_its_own_and_counts_the_evaluations_left(tmp_path):
    import re

    run_dir = tmp_path / "bar"
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # stdout and stderr (the bar) in the order written
    proc = subprocess.run([sys.executable, "-m", "mtrl_famo.cli", "train", *TINY, *MT1, "train.progress=true",
                           "train.total_steps=3000", "eval.every=1000", f"run_dir={run_dir}"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout
    at = proc.stdout.index("learning at ")
    assert proc.stdout[at - 1] in "\n\r", repr(proc.stdout[at - 80:at + 20])  # not after the bar's text
    line = proc.stdout[at:].splitlines()[0]
    assert re.fullmatch(r"learning at [\d,.]+ steps/s: about .+ for the remaining [\d,]+ steps and [123] "
                        r"evaluations? \(the final one included\)", line), line


def test_the_learning_speed_leaves_out_pauses_and_the_time_left_counts_the_evaluations(monkeypatch):
    """On a fake clock: 20 steps in 12 s of which 10 s were an evaluation is 10 steps/s, not 1.7; the time
    left adds the evaluations still to come (here 100 s) to the steps (1000 at 10 steps/s)."""
    import mtrl_famo.train as train

    now = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: now[0])
    lines = []
    speed = train.LearningSpeed(1030, lines.append, evaluations_left=lambda step: (2, 100.0))
    speed.MIN_SECONDS = 2.0
    speed.start(0)
    speed.observe(10)  # the first learning step (it may compile) starts the clock
    now[0] = 1.0
    speed.observe(20)
    now[0] = 11.0  # an evaluation took 10 s
    speed.pause_ended()
    now[0] = 12.0
    speed.observe(30)
    assert lines == ["learning at 10.0 steps/s: about 3 min for the remaining 1,000 steps and 2 evaluations "
                     "(the final one included)"]
