"""Populations (seeds=[...]): member i computes what the single run with seed i computes.

The stacked update against N single updates (every aggregator, every agent option, no
envs), then real MT10 trainings: a population of two against the two single runs
(parameters, optimizer and aggregator states, replay rows, evaluations), resume, a NaN
in one member, a sweep with one population per job, and the bad input a population refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import vmap
from torch.utils._pytree import tree_map

from conftest import TINY, assert_usage_error, run_cli
from mtrl_famo.aggregators import make_aggregator
from mtrl_famo.buffer import ReplayBuffer
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig
from mtrl_famo.sac import MTSAC
from mtrl_famo.stacked_sac import StackedMTSAC

AGGREGATORS = ["mean", "famo", "pcgrad", "cagrad"]
# Float tolerance: batched matmuls round differently from single ones; over the run the
# differences stay at float32 rounding (about 1e-7 seen) and evaluations agree.
RTOL, ATOL = 1e-4, 1e-5


# ---------------------------------------------------------------------------- no envs
@pytest.mark.parametrize("name", AGGREGATORS)
def test_vmapped_functional_aggregator_is_the_members_aggregators(name):
    k, P, N = 4, 30, 3
    options = {"pcgrad": lambda s: {"seed": s}, "cagrad": lambda s: {"c": 0.7}}.get(name, lambda s: {})
    singles = [make_aggregator(name, k, **options(s)) for s in range(N)]
    assert_vmapped_functional_form_is_the_objects(singles, [make_aggregator(name, k, **options(s)) for s in range(N)])


def assert_vmapped_functional_form_is_the_objects(singles: list, members: list, steps: int = 5) -> None:
    """``vmap`` of the functional entry point over the members' stacked states (each member's own draws)
    computes what each member's object API computes, and leaves the state it leaves."""
    template, gen = members[0], torch.Generator().manual_seed(0)
    template.immediate_checks = False
    state = tree_map(lambda *ts: torch.stack(ts), *[m.functional_state() for m in members])
    N, k = len(members), template.num_tasks
    for _ in range(steps):
        draws = tree_map(lambda *ts: torch.stack(ts), *[m.draws(torch.device("cpu")) for m in members])
        if template.uses_task_gradients:
            G = torch.randn(N, k, 30, generator=gen, dtype=torch.float64)
            direction, *weights = vmap(lambda s, g, d: [t for t in template.combine_fn(s, g, *d) if t is not None])(
                state, G, draws)  # PCGrad has no weights
            weights = weights[0] if weights else None
            torch.testing.assert_close(direction, torch.stack([a.combine(g) for a, g in zip(singles, G)]))
        else:
            losses, new = torch.rand(N, k, generator=gen) + 0.1, torch.rand(N, k, generator=gen) + 0.1

            def step(s, l, l_new, d):
                lam = template.loss_weights_fn(s, l, *d)
                template.update_fn(s, l, l_new)
                return lam, template.task_weights_fn(s, lam)

            lam, weights = vmap(step)(state, losses, new, draws)
            for a, row, row_new in zip(singles, losses, new):
                a.combine_losses(row)
                a.update(row_new)
            expected = [a.task_weights if a.loss_weights is None else a.loss_weights for a in singles]
            torch.testing.assert_close(lam, torch.stack(expected).to(lam.dtype))
        if singles[0].task_weights is not None:
            torch.testing.assert_close(weights.double(), torch.stack([a.task_weights for a in singles]).double())
    for i, single in enumerate(singles):
        for key, value in single.functional_state().items():
            torch.testing.assert_close(state[key][i], value)


def _agent(seed: int, aggregator: str, **agent_options) -> MTSAC:
    torch.manual_seed(seed)
    agg = AGGREGATOR_SCHEMAS[aggregator]()
    if aggregator == "pcgrad":
        agg.seed = seed
    return MTSAC(12, 4, 3, AgentConfig(hidden_sizes=[16, 16], **agent_options), agg, "cpu", immediate_checks=False)


def _buffer(seed: int) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(3, 64, 12, 4)
    for _ in range(40):
        obs, next_obs = rng.normal(size=(2, 3, 12))
        obs[:, -3:] = next_obs[:, -3:] = np.eye(3)
        buffer.add(obs, rng.uniform(-1, 1, (3, 4)), rng.normal(size=3), next_obs, rng.uniform(size=3) < 0.1)
    return buffer


EVERY_OPTION = dict(multi_head=True, grad_clip=0.5, shared_alpha=True, max_q_value=1.0, log_std_mode="clip",
                    init="reference", adam_eps=1e-5, target_entropy=-2.0)


@pytest.mark.parametrize("options", [{}, EVERY_OPTION], ids=["default", "every-option"])
@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_stacked_update_is_the_members_updates(aggregator, options):
    """Ten updates (one with diagnostics) and actions of 3 members against their single agents."""
    seeds = [0, 1, 2]
    singles = [_agent(s, aggregator, **options) for s in seeds]
    population = StackedMTSAC([_agent(s, aggregator, **options) for s in seeds])
    buffers = [_buffer(s) for s in seeds]
    for step in range(10):
        single = [a.update(b.sample(8, a.generator), diagnostics=step == 3) for a, b in zip(singles, buffers)]
        stacked = population.update(population.sample(buffers, 8), diagnostics=step == 3)
        assert stacked.keys() == single[0].keys()
        for key in stacked:
            expected = torch.stack([torch.as_tensor(m[key]) for m in single]).to(stacked[key].dtype)
            torch.testing.assert_close(stacked[key], expected, rtol=RTOL, atol=ATOL, msg=key)
        obs = np.random.default_rng(step).normal(size=(3, 5, 12)).astype(np.float32)
        np.testing.assert_allclose(population.act(obs), np.stack([a.act(o) for a, o in zip(singles, obs)]),
                                   rtol=RTOL, atol=ATOL)
    population.write_back()
    for single, member in zip(singles, population.members):
        _assert_agent_states_close(single.state_dict(), member.state_dict())
        assert torch.equal(single.generator.get_state(), member.generator.get_state())


def _assert_agent_states_close(expected: dict, actual: dict) -> None:
    """Networks, temperatures, optimizer moments and aggregator states, to float tolerance."""
    for net in ("actor", "critic", "critic_target"):
        for key, value in expected[net].items():
            torch.testing.assert_close(actual[net][key], value, rtol=RTOL, atol=ATOL, msg=f"{net}.{key}")
    torch.testing.assert_close(actual["log_alpha"], expected["log_alpha"], rtol=RTOL, atol=ATOL)
    for opt in ("actor_opt", "critic_opt", "alpha_opt"):
        assert actual[opt]["state"].keys() == expected[opt]["state"].keys()
        for i, state in expected[opt]["state"].items():
            assert float(actual[opt]["state"][i]["step"]) == float(state["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(actual[opt]["state"][i][key], state[key], rtol=RTOL, atol=ATOL)
    for name, state in expected["aggregators"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(actual["aggregators"][name][key].double(), value.double(),
                                           rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------- real MT10 runs
# 50 vector steps of MT10: 20 random, then 30 with an update each (one with diagnostics),
# an evaluation at 300 and a final one at 500, checkpoints at 300 and 500.
POP_ARGS = [*TINY, "train.total_steps=500", "eval.every=300", "train.log_every=250"]


def _single(tmp: Path, aggregator: str, seed: int) -> Path:
    from mtrl_famo.runconfig import compose_config
    from mtrl_famo.train import Trainer

    cfg = compose_config([*POP_ARGS, f"aggregator={aggregator}", f"seed={seed}", f"run_dir={tmp / f'single{seed}'}"])
    Trainer(cfg, out=lambda *_: None).run()
    return Path(cfg.run_dir)


def _population(run_dir: Path, aggregator: str, seeds: str, *extra: str):
    from mtrl_famo.population import PopulationTrainer, population_configs
    from mtrl_famo.runconfig import compose_node

    overrides = [*POP_ARGS, f"aggregator={aggregator}", f"seeds={seeds}", f"run_dir={run_dir}", *extra]
    configs, resume = population_configs(overrides, compose_node(overrides))
    return PopulationTrainer(configs, out=lambda *_: None), resume


# On real MT10: mean, FAMO (its own stacked form) and PCGrad (its seed from the member's config).
# CAGrad's stacked form calls each member's combine, as PCGrad's does: the env-free
# test_stacked_update_is_the_members_updates covers it (a fourth MT10 run costs CI over a minute).
@pytest.fixture(scope="module", params=["mean", "famo", "pcgrad"])
def population_and_singles(request, tmp_path_factory):
    """A population of seeds [0, 1], and the single runs to compare it with: seed 1 (the member
    that is not the functional template) for every aggregator, seed 0 too for mean."""
    tmp = tmp_path_factory.mktemp(request.param)
    trainer, _ = _population(tmp / "pop", request.param, "[0,1]")
    trainer.run()
    seeds = (0, 1) if request.param == "mean" else (1,)
    return request.param, tmp / "pop", {seed: _single(tmp, request.param, seed) for seed in seeds}


def test_member_i_is_the_single_run_with_seed_i(population_and_singles):
    aggregator, pop_dir, singles = population_and_singles
    for seed, single_dir in singles.items():
        member_dir = pop_dir / f"s{seed}"
        expected = torch.load(single_dir / "checkpoint.pt", weights_only=False)
        actual = torch.load(member_dir / "checkpoint.pt", weights_only=False)
        assert actual["step"] == expected["step"] == 500
        _assert_agent_states_close(expected["agent"], actual["agent"])
        torch.testing.assert_close(actual["buffer"]["storage"], expected["buffer"]["storage"], rtol=RTOL, atol=ATOL)
        assert torch.equal(actual["rng"]["agent"], expected["rng"]["agent"])  # same number of draws
        assert actual["rng"]["action_space"] == expected["rng"]["action_space"]
        evals = [[json.loads(line) for line in (d / "evals.jsonl").read_text().splitlines()]
                 for d in (single_dir, member_dir)]
        assert [e["step"] for e in evals[1]] == [e["step"] for e in evals[0]] == [300, 500]
        for exp, act in zip(*evals):
            assert act["success_rate"] == exp["success_rate"]
            # Episode returns sum 50 rewards of policies that agree to ~1e-7; a return near 0 has
            # no relative precision, hence the small absolute tolerance too.
            np.testing.assert_allclose(list(act["episodic_return"].values()),
                                       list(exp["episodic_return"].values()), rtol=RTOL, atol=1e-3)
        config = (member_dir / "config.yaml").read_text()
        assert f"seed: {seed}\n" in config and "seeds: null" in config
        if aggregator == "pcgrad":  # the member's PCGrad follows its seed, as `seed: ${seed}` says
            for net in ("critic", "actor"):
                assert actual["agent"]["aggregators"][net] == expected["agent"]["aggregators"][net]
                assert actual["agent"]["aggregators"][net]["seed"] == seed
    members = [torch.load(pop_dir / f"s{s}" / "checkpoint.pt", weights_only=False) for s in (0, 1)]
    assert not torch.equal(members[0]["agent"]["actor"]["net.0.weight"], members[1]["agent"]["actor"]["net.0.weight"])


def test_a_population_resumes_as_a_whole(population_and_singles):
    aggregator, pop_dir, _ = population_and_singles
    if aggregator != "famo":
        pytest.skip("one aggregator is enough")
    trainer, resume = _population(pop_dir, aggregator, "[0,1]", "train.total_steps=600")
    assert resume
    results = trainer.run(resume=True)
    assert [r["step"] for r in results] == [600, 600] and [r["seed"] for r in results] == [0, 1]
    for seed in (0, 1):
        evals = [json.loads(line) for line in (pop_dir / f"s{seed}" / "evals.jsonl").read_text().splitlines()]
        assert [e["step"] for e in evals] == [300, 500, 600]


def test_one_members_nan_stops_the_population_and_names_it(tmp_path):
    trainer, _ = _population(tmp_path / "pop", "mean", "[3,4]", "train.checkpoint_every=100")
    update = trainer.agent.update

    def update_with_nan_in_member_1(batch, diagnostics=False):  # seed 4's critic breaks at its first update
        if not trainer.agent.state["adam"]["critic"]["step"][0].any():
            with torch.no_grad():
                next(iter(trainer.agent.state["params"]["critic"].values()))[1].fill_(float("nan"))
        return update(batch, diagnostics)

    trainer.agent.update = update_with_nan_in_member_1
    with pytest.raises(FloatingPointError, match=r"population member seed=4 .*non-finite losses/critic.*"
                                                 r"every member's last checkpoint is intact"):
        trainer.run()
    for seed in (3, 4):
        state = torch.load(tmp_path / "pop" / f"s{seed}" / "checkpoint.pt", weights_only=False)
        assert state["step"] == 200  # the last one before learning began
        assert all(torch.isfinite(v).all() for v in state["agent"]["critic"].values())


def test_a_sweep_with_seeds_runs_one_population_per_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train", "--multirun", f"hydra.sweep.dir={sweep_dir}", "aggregator=mean,cagrad", "seeds=[0,1]",
                   *TINY, "train.total_steps=100", "train.warmup_steps=50", "eval.every=100")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [("aggregator=cagrad" in p.name, "seeds=[0,1]" in p.name) for p in jobs] == [(True, True), (False, True)]
    for job, aggregator in zip(jobs, ("cagrad", "mean")):
        for seed in (0, 1):
            results = json.loads((job / f"s{seed}" / "results.json").read_text())
            assert (results["seed"], results["aggregator"], results["finished"]) == (seed, aggregator, True)


@pytest.mark.parametrize("args, expected", [
    (["seeds=[0,0]"], "seeds=[0, 0] must be a non-empty list of distinct integers"),
    (["seeds=[]"], "seeds=[] must be a non-empty list"),
    (["seeds=[0,1]", "seed=3"], "seed= and seeds= given together"),
    (["seeds=[0,1]", "train.compile=all"], "train.compile='all' is not supported with seeds=[...]"),
])
def test_bad_population_input_is_one_line(tmp_path, args, expected):
    assert_usage_error(run_cli("train", *TINY, f"run_dir={tmp_path / 'pop'}", *args), expected)
