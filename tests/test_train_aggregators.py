"""`mtrl-famo train aggregator=<each>` on real MT10 logs the aggregator's diagnostics."""

import json

import pytest

from conftest import TINY, run_cli


@pytest.mark.parametrize("aggregator", ["famo", "pcgrad", "cagrad"])
def test_each_aggregator_trains_on_mt10_and_logs_diagnostics(tmp_path, aggregator):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / aggregator
    proc = run_cli("train", *TINY, f"aggregator={aggregator}", "train.total_steps=600", "eval.every=600",
                   f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "results.json").read_text())["aggregator"] == aggregator
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for network in ("critic", "actor"):
        assert f"aggregator/{network}/cos_sim_mean" in tags
        assert f"aggregator/{network}/conflict_fraction" in tags
    if aggregator in ("famo", "cagrad"):  # weights of the tasks (FAMO z, CAGrad w*)
        weights = [acc.Scalars(f"aggregator/critic/weights/{task}")[-1].value
                   for task in json.loads((run_dir / "results.json").read_text())["tasks"]]
        assert sum(weights) == pytest.approx(1.0, abs=1e-4)
