"""`mtrl-famo report` on real tiny MT10 runs: groups, numbers from the runs' own logs, plots, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import trim_mean

from conftest import TINY_RUN, assert_usage_error, run_cli
from mtrl_famo.report import ReportError
from mtrl_famo.report.command import build_report
from mtrl_famo.report.runs import find_run_dirs
from mtrl_famo.report.stats import iqm, stratified_bootstrap_ci
from mtrl_famo.report.summary import curves

PLOTS = ("learning_curves_mt10.png", "per_task_heatmap_mt10.png", "per_task_curves_mt10.png")


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_mt10_run) -> Path:
    """Three finished tiny MT10 runs: mean seeds 0 and 1, famo seed 0 (the last two trained in parallel)."""
    root = tmp_path_factory.mktemp("report_runs")
    shutil.copytree(tiny_mt10_run, root / "mean-s0", ignore=shutil.ignore_patterns("tb", "checkpoint.pt", "eval.json"))
    procs = [subprocess.Popen([sys.executable, "-m", "mtrl_famo.cli", "train", *TINY_RUN, *extra,
                               f"run_dir={root / name}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, extra in (("mean-s1", ["seed=1"]), ("famo-s0", ["aggregator=famo"]))]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    return root


@pytest.fixture(scope="module")
def report_out(runs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    proc = run_cli("report", str(runs_root), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_summary_groups_runs_by_benchmark_and_aggregator(runs_root, report_out):
    out, _ = report_out
    rows = {(r["benchmark"], r["aggregator"]): r for r in read_csv(out / "summary.csv")}
    assert set(rows) == {("mt10", "mean"), ("mt10", "famo")}
    groups = {"mean": ["mean-s0", "mean-s1"], "famo": ["famo-s0"]}
    for agg, names in groups.items():
        row = rows[("mt10", agg)]
        res = [results(runs_root / n) for n in names]
        scores = np.array([[r["success_rate"][t] for t in res[0]["tasks"]] for r in res])
        assert int(row["runs"]) == len(names) and int(row["finished_runs"]) == len(names)
        assert row["seeds"] == " ".join(str(r["seed"]) for r in res)
        assert int(row["step_min"]) == int(row["step_max"]) == 1000
        assert row["episodes"] == "1" and row["status"] == "finished"
        assert float(row["mean_success"]) == pytest.approx(np.mean([r["mean_success_rate"] for r in res]), abs=1e-6)
        assert float(row["iqm"]) == pytest.approx(trim_mean(scores.ravel(), 0.25), abs=1e-6)
        if len(names) == 1:  # one seed: no interval
            assert row["mean_success_ci_low"] == row["mean_success_ci_high"] == ""
        else:  # each task's runs resampled independently: bounded by the per-task extremes
            low, high = float(row["mean_success_ci_low"]), float(row["mean_success_ci_high"])
            assert scores.min(0).mean() - 1e-9 <= low <= high <= scores.max(0).mean() + 1e-9


def test_per_task_table_matches_each_runs_results(runs_root, report_out):
    out, _ = report_out
    rows = read_csv(out / "per_task.csv")
    tasks = results(runs_root / "mean-s0")["tasks"]
    assert len(rows) == 2 * len(tasks)
    for row in rows:
        names = ["mean-s0", "mean-s1"] if row["aggregator"] == "mean" else ["famo-s0"]
        res = [results(runs_root / n) for n in names]
        assert int(row["runs"]) == len(names)
        assert float(row["mean_success"]) == pytest.approx(np.mean([r["success_rate"][row["task"]] for r in res]))
        assert float(row["mean_return"]) == pytest.approx(np.mean([r["episodic_return"][row["task"]] for r in res]),
                                                          rel=1e-5)
    runs = read_csv(out / "runs.csv")
    assert sorted((r["aggregator"], r["seed"], r["step"], r["finished"]) for r in runs) == [
        ("famo", "0", "1000", "True"), ("mean", "0", "1000", "True"), ("mean", "1", "1000", "True")]


def test_markdown_is_printed_and_written(runs_root, report_out):
    out, stdout = report_out
    text = (out / "report.md").read_text()
    assert stdout.startswith(text)
    assert "## MT10 (10 tasks)" in text and "| famo " in text and "| mean " in text
    mean = np.mean([results(runs_root / n)["mean_success_rate"] for n in ("mean-s0", "mean-s1")])
    assert f"**{mean:.2f}**" in text
    for task in results(runs_root / "mean-s0")["tasks"]:
        assert f"| {task} " in text
    for name in PLOTS:
        assert f"]({name})" in text


def test_plots_are_non_empty_pngs(report_out):
    out, _ = report_out
    for name in PLOTS:
        path = out / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width >= 500 and img.height >= 300


def test_learning_curves_follow_the_evaluation_logs(runs_root):
    sections, num_runs, skipped = build_report([runs_root])
    assert num_runs == 3 and not skipped and list(sections) == ["mt10"]
    group = next(g for g in sections["mt10"] if g.aggregator == "mean")
    steps, success = curves(group.runs, group.tasks)
    assert steps.tolist() == [500, 1000]
    for i, run in enumerate(group.runs):
        evals = [json.loads(line) for line in (run.path / "evals.jsonl").read_text().splitlines()]
        expected = [[e["success_rate"][t] for t in group.tasks] for e in evals]
        np.testing.assert_allclose(success[i], expected)


def test_run_in_progress_is_reported_at_its_latest_evaluation(runs_root, tmp_path):
    # A run stopped after its first evaluation: evals.jsonl has one line and there is no results.json yet.
    shutil.copytree(runs_root / "mean-s0", tmp_path / "mean-s0")
    partial = tmp_path / "mean-s1"
    shutil.copytree(runs_root / "mean-s1", partial)
    (partial / "results.json").unlink()
    first = (partial / "evals.jsonl").read_text().splitlines()[0]
    (partial / "evals.jsonl").write_text(first + "\n")
    out = tmp_path / "out"
    proc = run_cli("report", str(tmp_path / "mean-s0"), str(partial), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "in progress: 1 of 2 runs at step 500" in proc.stdout
    (row,) = read_csv(out / "summary.csv")
    assert (row["step_min"], row["step_max"], row["finished_runs"]) == ("500", "1000", "1")
    expected = np.mean([results(runs_root / "mean-s0")["mean_success_rate"], json.loads(first)["mean_success_rate"]])
    assert float(row["mean_success"]) == pytest.approx(expected)


def test_a_folder_without_runs_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    for args, expected in (([str(tmp_path / "empty")], "no mtrl-famo run"),
                           ([], "the following arguments are required: RUN_DIR")):
        assert_usage_error(run_cli("report", *args, "--out", str(out)), expected)
        assert not out.exists()


def test_a_missing_path_is_refused(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        find_run_dirs([tmp_path / "missing"])


@pytest.mark.parametrize("old, new, name", [
    ("max_episode_steps: 50", "max_episode_steps: 500", "benchmark.max_episode_steps"),
    ("critic_lr: 0.0003", "critic_lr: 0.001", "agent.critic_lr"),
])
def test_runs_with_different_settings_are_never_pooled(runs_root, tmp_path, old, new, name):
    """Seeds 0 and 1 of mean, one of them with another setting: two groups of one seed each, named by it."""
    shutil.copytree(runs_root / "mean-s0", tmp_path / "a")
    shutil.copytree(runs_root / "mean-s1", tmp_path / "b")
    config = tmp_path / "b" / "config.yaml"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    out = tmp_path / "out"
    proc = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out / "summary.csv")
    assert sorted((r["runs"], r["seeds"], r["settings"]) for r in rows) == [
        ("1", "0", f"{name}={old.split(': ')[1]}"), ("1", "1", f"{name}={new.split(': ')[1]}")]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in (out / "report.md").read_text().splitlines()
             if line.startswith("| mean ")]
    assert [f"{name}={new.split(': ')[1]}"] in [row[1:2] for row in table]  # the group's key: its settings


def test_bootstrap_and_iqm_on_a_fixed_matrix():
    assert iqm(np.arange(8.0)) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    scores = np.array([[0.0, 1.0, 0.5], [1.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    low, high = stratified_bootstrap_ci(scores, "mean")
    assert scores.min(0).mean() <= low < scores.mean() < high <= scores.max(0).mean()
    assert stratified_bootstrap_ci(scores, "mean") == (low, high)  # seeded: the same report twice
    assert all(np.isnan(stratified_bootstrap_ci(scores[:1], "iqm")))


def test_runs_of_different_protocols_are_never_pooled_and_named_by_protocol(runs_root, tmp_path):
    """A protocol changes several values at once; the group is named by the protocol, not by each value."""
    shutil.copytree(runs_root / "mean-s0", tmp_path / "a")
    shutil.copytree(runs_root / "mean-s1", tmp_path / "b")
    config = tmp_path / "b" / "config.yaml"
    text = config.read_text()
    for old, new in (("name: default", "name: metaworld_plus"), ("init: torch", "init: reference"),
                     ("log_std_mode: tanh", "log_std_mode: clip")):
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    out = tmp_path / "out"
    proc = run_cli("report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(out / "summary.csv")
    assert sorted((r["protocol"], r["runs"], r["seeds"], r["settings"]) for r in rows) == [
        ("default", "1", "0", "protocol.name=default"), ("metaworld_plus", "1", "1", "protocol.name=metaworld_plus")]
    report = (out / "report.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in report.splitlines() if line.startswith("|")]
    assert ["mean B", "protocol.name=metaworld_plus", "metaworld_plus"] in [r[:3] for r in rows]  # label, its key
