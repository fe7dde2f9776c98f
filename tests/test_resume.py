"""A resume is the same run (issue 23): on real MT10, a run stopped (a real SIGTERM mid-episode, or a real
kill -9 during an evaluation, after its periodic checkpoint) and resumed ends with every tensor of the
uninterrupted run's checkpoint, its evals.jsonl, and TensorBoard holding exactly its steps; the same for a
population of 2. Also: another device's generator state, old checkpoints, a folder with no checkpoint yet,
two populations on one folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, assert_usage_error, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_d024f2c"

# 60 vector steps of MT10 (20 of warm-up), 50-step episodes (new ones at step 500), evaluations at 200,
# 400 and the end, checkpoints at 200 and 400: the stops below fall in the middle of an episode.
RUN = [*TINY, "train.total_steps=600", "eval.every=200", "train.checkpoint_every=200", "train.log_every=100"]
TOTAL = 600

# A `mtrl-famo train` that stops itself at a chosen point with a real signal: SIGTERM once the replay
# buffer holds AT rows per task (or once the time left is printed), or kill -9 inside the evaluation at
# step AT (after its envs ran).
STOPPER = """
import os, signal, sys
from mtrl_famo import cli, train
from mtrl_famo.buffer import ReplayBuffer
how, at = sys.argv[1], int(sys.argv[2])
sent = []
if how == "sigterm":
    add = ReplayBuffer.add
    def add_then_signal(self, *args):
        add(self, *args)
        if self.size == at and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
    ReplayBuffer.add = add_then_signal
elif how == "eta":  # SIGTERM once the time left has been printed
    observe = train.LearningSpeed.observe
    def observe_then_signal(self, step):
        observe(self, step)
        if self.done and not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)
    train.LearningSpeed.observe = observe_then_signal
else:
    evaluate = train.evaluate
    def evaluate_then_die(agent, envs, names, episodes, step, *args, **kwargs):
        result = evaluate(agent, envs, names, episodes, step, *args, **kwargs)
        if step == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    train.evaluate = evaluate_then_die
sys.exit(cli.main(sys.argv[3:]))
"""


def stopped_run(how: str, at: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", STOPPER, how, str(at), "train", *args], capture_output=True,
                          text=True, timeout=600)


def tensorboard_steps(run_dir: Path) -> dict[str, list[int]]:
    """Every scalar and text tag of the run's TensorBoard, with the steps TensorBoard shows for it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    steps = {tag: [e.step for e in acc.Scalars(tag)] for tag in tags["scalars"]}
    steps.update({f"text:{tag}": [e.step for e in acc.Tensors(tag)] for tag in tags["tensors"]})
    return steps


def assert_same_state(expected, actual, path: str = "checkpoint") -> None:
    """Every tensor, array and value of two checkpoints equal (``config.run_dir`` aside)."""
    if isinstance(expected, dict):
        keys = set(expected) - ({"run_dir"} if path.endswith("config") else set())
        assert keys == set(actual) - ({"run_dir"} if path.endswith("config") else set()), path
        for key in keys:
            assert_same_state(expected[key], actual[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(actual), path
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same_state(e, a, f"{path}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert expected.dtype == actual.dtype and torch.equal(expected, actual), path
    elif isinstance(expected, np.ndarray):
        assert expected.dtype == actual.dtype and np.array_equal(expected, actual), path
    else:
        assert expected == actual, path


def assert_same_run(expected: Path, actual: Path) -> None:
    """The final checkpoint, evals.jsonl, results and TensorBoard steps of two runs are the same."""
    assert_same_state(torch.load(expected / "checkpoint.pt", weights_only=False),
                      torch.load(actual / "checkpoint.pt", weights_only=False))
    assert (actual / "evals.jsonl").read_text() == (expected / "evals.jsonl").read_text()
    results = [json.loads((d / "results.json").read_text()) for d in (expected, actual)]
    assert results[0] == results[1]
    assert tensorboard_steps(actual) == tensorboard_steps(expected)  # every tag's steps, each once


@pytest.fixture(scope="module", params=["mean", "pcgrad"])
def straight(request, tmp_path_factory) -> tuple[str, Path]:
    """The uninterrupted run of each aggregator."""
    run_dir = tmp_path_factory.mktemp(request.param) / "straight"
    proc = run_cli("train", *RUN, f"aggregator={request.param}", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    return request.param, run_dir


def test_a_run_stopped_by_sigterm_resumes_bit_for_bit(straight, tmp_path):
    aggregator, expected = straight
    vector_steps = {"mean": 33, "pcgrad": 50}[aggregator]  # in the first episode; at its end (50-step episodes)
    run_dir = tmp_path / "stopped"
    proc = stopped_run("sigterm", vector_steps, *RUN, f"aggregator={aggregator}", f"run_dir={run_dir}")
    assert proc.returncode == 143, proc.stderr
    assert f"stopped by SIGTERM at step {vector_steps * 10}; checkpoint saved in {run_dir}" in proc.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["envs"]["train"]["replay"]["actions"].shape \
        == (vector_steps % 50, 10, 4)  # the actions of the episodes in progress
    proc = run_cli("train", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {run_dir} from step {vector_steps * 10}" in proc.stdout
    assert "start fresh" not in proc.stdout and "start new episodes" not in proc.stdout  # restored exactly
    assert_same_run(expected, run_dir)


def test_a_run_killed_during_an_evaluation_resumes_bit_for_bit(straight, tmp_path):
    aggregator, expected = straight
    run_dir = tmp_path / "killed"
    proc = stopped_run("kill", 400, *RUN, f"aggregator={aggregator}", f"run_dir={run_dir}")
    assert proc.returncode == -9, proc.stderr
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 200  # the periodic one
    assert 400 in tensorboard_steps(run_dir)["charts/SPS"]  # logged after the checkpoint: to be dropped
    proc = run_cli("train", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {run_dir} from step 200" in proc.stdout
    assert_same_run(expected, run_dir)
    assert tensorboard_steps(run_dir)["charts/mean_success_rate"] == [200, 400, 600]


def test_extending_a_finished_run_is_the_longer_run(straight, tmp_path):
    aggregator, longer = straight
    if aggregator != "mean":
        pytest.skip("one aggregator is enough")
    extended = tmp_path / "extended"
    proc = run_cli("train", *RUN, "train.total_steps=400", f"run_dir={extended}")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("train", f"run_dir={extended}", f"train.total_steps={TOTAL}")
    assert proc.returncode == 0, proc.stderr
    assert f"resuming {extended} from step 400" in proc.stdout
    # The shorter run's final evaluation at 400 stays; the longer run evaluated at 400 too, the same way.
    assert_same_run(longer, extended)


# ---------------------------------------------------------------------------- other devices, old checkpoints
def test_an_old_checkpoint_resumes_with_fresh_envs(tmp_path):
    run_dir = tmp_path / "single"
    shutil.copytree(FIXTURES / "single", run_dir)
    proc = run_cli("train", f"run_dir={run_dir}", "train.total_steps=400")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if "simulator state" in line]
    assert notes == ["the checkpoint holds no simulator state (written before mtrl-famo saved it): the envs "
                     "start fresh, their goal sequences from the start"]
    assert json.loads((run_dir / "results.json").read_text())["step"] == 400
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["envs"]["train"]["replay"] is not None


def test_a_generator_state_of_another_device_is_reseeded_from_seed_and_step(tmp_path):
    from mtrl_famo.checkpoint import restore_generator

    run_dir = tmp_path / "from-cuda"
    shutil.copytree(FIXTURES / "single", run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    cuda_like = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state: Philox seed and offset
    state["rng"].update(agent=cuda_like, agent_device="cuda:0", cuda=[cuda_like])
    torch.save(state, run_dir / "checkpoint.pt")
    proc = run_cli("train", f"run_dir={run_dir}", "train.total_steps=400")
    assert proc.returncode == 0, proc.stderr
    assert ("the agent's stream (saved on cuda:0) cannot continue on cpu: re-seeded from seed=0 and step 300 "
            "(the run goes on, not bit for bit)") in proc.stdout.splitlines()
    # The same seed and step give the same stream, on every machine; another step another one.
    draws = []
    for step in (300, 300, 310):
        generator = torch.Generator()
        assert not restore_generator(generator, cuda_like, "cuda:0", 0, step, "agent")
        draws.append(torch.randn(4, generator=generator))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_an_old_population_checkpoint_resumes(tmp_path):
    pop_dir = tmp_path / "pop"
    shutil.copytree(FIXTURES / "pop", pop_dir)
    proc = run_cli("train", "seeds=[0,1]", f"run_dir={pop_dir}", "train.total_steps=400")
    assert proc.returncode == 0, proc.stderr
    assert "resuming the population of seeds [0, 1] from step 300" in proc.stdout
    assert proc.stdout.count("the envs start fresh") == 2
    assert [json.loads((pop_dir / f"s{s}" / "results.json").read_text())["step"] for s in (0, 1)] == [400, 400]


# ---------------------------------------------------------------------------- a folder without a checkpoint
def test_a_folder_with_a_config_but_no_checkpoint_restarts_or_refuses(tmp_path):
    run_dir = tmp_path / "early"
    early = [*TINY, "train.total_steps=300", "eval.every=100", "train.checkpoint_every=200"]
    proc = stopped_run("kill", 100, *early, f"run_dir={run_dir}")  # killed before the first checkpoint
    assert proc.returncode == -9 and (run_dir / "config.yaml").exists() and not (run_dir / "checkpoint.pt").exists()
    assert_usage_error(run_cli("train", *early, "aggregator=pcgrad", f"run_dir={run_dir}"),
                       f"run_dir={str(run_dir)!r} holds a run stopped before its first checkpoint, with "
                       f"aggregator.name=mean; cannot start it again with aggregator.name=pcgrad")
    proc = run_cli("train", *early, f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert "stopped before its first checkpoint: starting it again from step 0" in proc.stdout
    steps = tensorboard_steps(run_dir)
    assert steps["text:hyperparameters/text_summary"] == [0]  # one run's hyperparameters, not two
    assert steps["charts/mean_success_rate"] == [100, 200, 300]


def test_eval_of_a_population_folder_points_at_its_members(tmp_path):
    pop_dir = tmp_path / "pop"
    shutil.copytree(FIXTURES / "pop", pop_dir)
    assert_usage_error(run_cli("eval", f"run_dir={pop_dir}"),
                       f"run_dir={str(pop_dir)!r} holds no checkpoint (checkpoint.pt) of a mtrl-famo run; it is a "
                       f"population's folder: give one member, e.g. run_dir={str(pop_dir / 's0')!r} (members: s0, s1)")
