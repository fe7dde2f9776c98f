"""The loss-weighting aggregators of issue 12: UW (Kendall et al. 2018), DWA (Liu et al. 2019),
RLW (Lin et al. 2022). Defining behaviour on small tensors, state, populations, config refusals,
and one tiny `mtrl-famo train` on real MT10 each."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY, assert_usage_error, last_task_weights, run_cli
from mtrl_famo.aggregators import make_aggregator
from mtrl_famo.buffer import ReplayBuffer
from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig, ConfigError
from mtrl_famo.runconfig import compose_config
from mtrl_famo.sac import MTSAC
from mtrl_famo.stacked_sac import StackedMTSAC
from test_population import assert_vmapped_functional_form_is_the_objects

NAMES = ["uw", "dwa", "rlw"]
SMALL = {"uw": {}, "dwa": {"window": 2}, "rlw": {"seed": 3}}  # DWA leaves its warm-up after 4 calls


def _losses(n: int, k: int = 3, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(k, generator=gen) * 2 + 0.1 for _ in range(n)]


# ---------------------------------------------------------------------------- shared
@pytest.mark.parametrize("name", NAMES)
def test_output_is_a_finite_scalar_whose_gradient_is_the_weights(name):
    agg = make_aggregator(name, 3, **SMALL[name])
    for losses in _losses(7):
        losses = losses.clone().requires_grad_(True)
        weights_before = agg.task_weights
        out = agg.combine_losses(losses)
        assert out.shape == () and torch.isfinite(out)
        (grad,) = torch.autograd.grad(out, losses)
        # The gradient is the (constant) weights: UW's before its step on s, DWA's and RLW's of this call.
        expected = weights_before if name == "uw" else agg.task_weights
        torch.testing.assert_close(grad, expected)
        assert not agg.task_weights.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shapes_are_refused(name):
    agg = make_aggregator(name, 3, **SMALL[name])
    for bad in (torch.ones(4), torch.ones(3, 1), torch.ones(3, dtype=torch.int64)):
        with pytest.raises(ValueError, match="losses"):
            agg.combine_losses(bad)
    with pytest.raises(FloatingPointError, match=r"task indices \[1\]"):
        agg.combine_losses(torch.tensor([1.0, math.nan, 1.0]))


@pytest.mark.parametrize("name, options, expected", [
    ("uw", {"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
    ("uw", {"lr": -1}, "lr must be a finite number > 0, got -1"),
    ("uw", {"lr": math.inf}, "lr must be a finite number > 0, got inf"),
    ("uw", {"lr": "fast"}, "lr must be a finite number > 0, got 'fast'"),
    ("dwa", {"temperature": 0}, "temperature must be a finite number > 0, got 0"),
    ("dwa", {"temperature": math.nan}, "temperature must be a finite number > 0, got nan"),
    ("dwa", {"window": 0}, "window must be an integer >= 1 (updates per window), got 0"),
    ("dwa", {"window": 2.5}, "window must be an integer >= 1 (updates per window), got 2.5"),
    ("dwa", {"window": True}, "window must be an integer >= 1 (updates per window), got True"),
    ("rlw", {"seed": 1.5}, "seed must be an integer, got 1.5"),
    ("rlw", {"seed": "x"}, "seed must be an integer, got 'x'"),
    ("rlw", {"sigma": 1.0}, "unknown option 'sigma' for aggregator 'rlw'; allowed: seed"),
])
def test_bad_options_are_one_value_error(name, options, expected):
    with pytest.raises(ValueError) as info:
        make_aggregator(name, 3, **options)
    assert str(info.value) == expected


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_the_same_way(name):
    agg = make_aggregator(name, 3, **SMALL[name])
    stream = _losses(9, seed=1)
    for losses in stream[:5]:
        agg.combine_losses(losses)
    state = agg.state_dict()
    resumed = make_aggregator(name, 3, **SMALL[name])
    resumed.load_state_dict(state)
    torch.testing.assert_close(resumed.task_weights, agg.task_weights)
    for losses in stream[5:]:
        torch.testing.assert_close(resumed.combine_losses(losses), agg.combine_losses(losses))
        torch.testing.assert_close(resumed.task_weights, agg.task_weights)
    with pytest.raises(ValueError, match="state dict does not match"):
        resumed.load_state_dict({"bogus": 1})


def test_repr_and_families():
    assert [repr(make_aggregator(n, 3)) for n in NAMES] == ["UW(lr=0.025)", "DWA(temperature=2, window=500)",
                                                           "RLW(seed=0)"]
    for name in NAMES:
        agg = make_aggregator(name, 3)
        assert not agg.uses_task_gradients and not agg.needs_update  # no second forward pass
        assert agg.to("cpu") is agg


# ---------------------------------------------------------------------------- UW
def _uw_at(s: list[float], lr: float = 0.025):
    uw = make_aggregator("uw", len(s), lr=lr)
    state = uw.state_dict()
    state["log_vars"] = torch.tensor(s)
    uw.load_state_dict(state)
    return uw


def test_uw_weights_are_exp_minus_s_and_its_s_gradient_is_the_closed_form():
    s = [-0.5, 0.0, 1.2]
    uw = _uw_at(s)
    torch.testing.assert_close(uw.task_weights, torch.exp(-torch.tensor(s)))
    losses = torch.tensor([0.3, 2.0, 5.0])
    s_var = torch.tensor(s, requires_grad=True)
    (expected,) = torch.autograd.grad((torch.exp(-s_var) * losses + s_var).sum(), s_var)
    torch.testing.assert_close(uw.log_var_gradient(losses), expected)
    torch.testing.assert_close(expected, 1 - torch.exp(-torch.tensor(s)) * losses)
    # The returned scalar is the objective's value; backpropagating it leaves s alone (its own Adam steps it).
    out = uw.combine_losses(losses.clone().requires_grad_(True))
    torch.testing.assert_close(out, (torch.exp(-torch.tensor(s)) * losses + torch.tensor(s)).sum())
    out.backward()
    assert uw.log_vars.grad is None
    # One Adam step moves every s_i against the sign of its gradient by about lr.
    step = uw.log_vars.detach() - torch.tensor(s)
    torch.testing.assert_close(step, -0.025 * torch.sign(expected), atol=1e-6, rtol=1e-4)


def test_uw_s_moves_to_log_of_the_losses():
    uw = make_aggregator("uw", 3, lr=0.05)
    losses = torch.tensor([0.5, 2.0, 10.0])
    for _ in range(800):
        uw.combine_losses(losses)
    torch.testing.assert_close(uw.log_vars.detach(), losses.log(), atol=0.06, rtol=0)
    torch.testing.assert_close(uw.task_weights, 1 / losses, rtol=0.07, atol=0)  # exp(-s) -> 1 / L


def test_uw_and_dwa_refuse_negative_losses():
    for name in ("uw", "dwa"):
        with pytest.raises(ValueError, match=r"non-negative task losses.*tasks \[2\]"):
            make_aggregator(name, 3).combine_losses(torch.tensor([1.0, 0.5, -0.2]))


# ---------------------------------------------------------------------------- DWA
def test_dwa_equal_weights_in_warm_up_then_k_softmax_of_window_ratios():
    k, window, T = 3, 2, 2.0
    dwa = make_aggregator("dwa", k, temperature=T, window=window)
    history = [torch.tensor(row) for row in ([4.0, 1.0, 2.0], [2.0, 3.0, 2.0], [1.0, 1.0, 3.0],
                                            [2.0, 2.0, 1.0], [0.5, 1.0, 1.0], [1.0, 1.0, 1.0])]
    for losses in history[:2 * window]:  # the first 2 windows: all weights 1
        dwa.combine_losses(losses)
        torch.testing.assert_close(dwa.task_weights, torch.ones(k))
    for n in range(2 * window, len(history)):
        older = torch.stack(history[n - 2 * window:n - window]).mean(0)  # L(t-2), by hand
        recent = torch.stack(history[n - window:n]).mean(0)  # L(t-1)
        expected = k * torch.softmax(recent / older / T, dim=0)
        out = dwa.combine_losses(history[n])
        torch.testing.assert_close(dwa.task_weights, expected)
        torch.testing.assert_close(out, (expected * history[n]).sum())
        assert abs(float(dwa.task_weights.sum()) - k) < 1e-5
    # Call 4: windows [4,1,2],[2,3,2] -> [3,2,2]; [1,1,3],[2,2,1] -> [1.5,1.5,2]; r = [0.5,0.75,1].
    dwa2 = make_aggregator("dwa", k, temperature=T, window=window)
    for losses in history[:5]:
        dwa2.combine_losses(losses)
    r = torch.tensor([0.5, 0.75, 1.0])
    torch.testing.assert_close(dwa2.task_weights, 3 * torch.exp(r / 2) / torch.exp(r / 2).sum())
    assert dwa2.task_weights[0] < dwa2.task_weights[1] < dwa2.task_weights[2]  # the slowest-falling loss gains


def test_dwa_large_temperature_tends_to_equal_weights():
    dwa = make_aggregator("dwa", 3, temperature=1e6, window=1)
    for losses in _losses(5):
        dwa.combine_losses(losses)
    torch.testing.assert_close(dwa.task_weights, torch.ones(3), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- RLW
def _rlw_stream(seed: int, n: int, k: int = 4) -> torch.Tensor:
    rlw = make_aggregator("rlw", k, seed=seed)
    rows = []
    for _ in range(n):
        rlw.combine_losses(torch.ones(k))
        rows.append(rlw.task_weights)
    return torch.stack(rows)


def test_rlw_weights_are_on_the_simplex_and_differ_per_call():
    w = _rlw_stream(0, 6)
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(1), torch.ones(6))
    assert all(not torch.equal(w[i], w[j]) for i in range(6) for j in range(i))


def test_rlw_stream_is_reproducible_from_its_seed_and_resumes():
    assert torch.equal(_rlw_stream(5, 4), _rlw_stream(5, 4))
    assert not torch.equal(_rlw_stream(5, 4), _rlw_stream(6, 4))
    full = _rlw_stream(5, 6)
    first = make_aggregator("rlw", 4, seed=5)
    for _ in range(3):
        first.combine_losses(torch.ones(4))
    resumed = make_aggregator("rlw", 4, seed=0)
    resumed.load_state_dict(first.state_dict())  # carries the seed and the call count
    rest = []
    for _ in range(3):
        resumed.combine_losses(torch.ones(4))
        rest.append(resumed.task_weights)
    torch.testing.assert_close(torch.stack(rest), full[3:])


def test_rlw_weights_are_softmax_of_a_standard_normal():
    """Their law: the mean weight is 1/k and E[log w_i - log w_j] = 0, Var = 2 (eps_i - eps_j ~ N(0, 2))."""
    rlw = make_aggregator("rlw", 4, seed=0)
    w = torch.stack([rlw.draw() for _ in range(3000)])
    torch.testing.assert_close(w.mean(0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    diff = (w[:, 0].log() - w[:, 1].log()).double()
    assert abs(float(diff.mean())) < 0.1 and abs(float(diff.var()) - 2.0) < 0.2


def test_rlw_accepts_negative_losses():
    rlw = make_aggregator("rlw", 3)
    out = rlw.combine_losses(torch.tensor([-1.0, -2.0, 0.5]))
    torch.testing.assert_close(out, (rlw.task_weights * torch.tensor([-1.0, -2.0, 0.5])).sum())


# ---------------------------------------------------------------------------- populations
@pytest.mark.parametrize("name", NAMES)
def test_functional_form_is_the_objects(name):
    """The population's view of each: vmap of the functional form over stacked states (DWA, whose
    call count lives on the host, goes member by member: a population of one per call)."""
    options = (lambda s: {"seed": s}) if name == "rlw" else (lambda s: SMALL[name])
    make = lambda: [make_aggregator(name, 3, **options(s)) for s in range(2)]  # noqa: E731
    singles, members = make(), make()
    if name == "dwa":
        for single, member in zip(singles, members):
            assert_vmapped_functional_form_is_the_objects([single], [member], steps=6)
    else:
        assert_vmapped_functional_form_is_the_objects(singles, members, steps=6)
    if name == "rlw":  # each member follows its own seed
        assert not torch.equal(singles[0].task_weights, singles[1].task_weights)


def _agent(seed: int, name: str) -> MTSAC:
    torch.manual_seed(seed)
    cfg = AGGREGATOR_SCHEMAS[name](**({"seed": seed} if name == "rlw" else {"window": 2} if name == "dwa" else {}))
    return MTSAC(12, 4, 3, AgentConfig(hidden_sizes=[16, 16]), cfg, "cpu", immediate_checks=False)


def _buffer(seed: int) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(3, 64, 12, 4)
    for _ in range(20):
        obs, next_obs = rng.normal(size=(2, 3, 12))
        obs[:, -3:] = next_obs[:, -3:] = np.eye(3)
        buffer.add(obs, rng.uniform(-1, 1, (3, 4)), rng.normal(size=3), next_obs, rng.uniform(size=3) < 0.1)
    return buffer


@pytest.mark.parametrize("name", NAMES)
def test_population_update_is_the_members_updates(name):
    singles = [_agent(s, name) for s in (0, 1)]
    population = StackedMTSAC([_agent(s, name) for s in (0, 1)])
    buffers = [_buffer(s) for s in (0, 1)]
    for _ in range(6):
        single = [a.update(b.sample(8, a.generator)) for a, b in zip(singles, buffers)]
        stacked = population.update(population.sample(buffers, 8))
        for key in ("losses/critic", "aggregator/critic/weights"):
            torch.testing.assert_close(stacked[key], torch.stack([m[key] for m in single]), rtol=1e-4, atol=1e-5)
    population.write_back()
    for single, member in zip(singles, population.members):
        for key, value in single.aggregators["critic"].state_dict().items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(member.aggregators["critic"].state_dict()[key], value,
                                           rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- config
def test_config_defaults_and_sources():
    uw, dwa, rlw = (compose_config([f"aggregator={n}", "seed=7"]).aggregator for n in NAMES)
    assert (uw.apply_to, uw.lr) == (["critic"], 0.025)
    assert (dwa.apply_to, dwa.temperature, dwa.window) == (["critic"], 2.0, 500)  # one Meta-World episode
    assert (rlw.apply_to, rlw.seed) == (["critic", "actor"], 7)  # the run's seed
    assert compose_config(["aggregator=dwa", "benchmark.max_episode_steps=50"]).aggregator.window == 50
    for name in NAMES:
        for field, meta in AGGREGATOR_SCHEMAS[name].__dataclass_fields__.items():
            if field != "name":
                assert meta.metadata.get("help"), f"{name}.{field} has no doc line"


@pytest.mark.parametrize("overrides, expected", [
    (["aggregator=uw", "aggregator.lr=0"], "aggregator.lr=0.0 must be > 0"),
    (["aggregator=dwa", "aggregator.temperature=-1"], "aggregator.temperature=-1.0 must be > 0"),
    (["aggregator=dwa", "aggregator.window=0"], "aggregator.window=0 must be an integer >= 1"),
    (["aggregator=rlw", "aggregator.apply_to=[critic,actor,value]"], "aggregator.apply_to has 'value'"),
])
def test_bad_config_values_are_refused(overrides, expected):
    with pytest.raises(ConfigError, match="^" + expected.replace("[", r"\[").replace(".", r"\.")):
        compose_config(overrides)


@pytest.mark.parametrize("name", ["uw", "dwa"])
def test_uw_and_dwa_on_the_actor_are_refused_at_config_time(tmp_path, name):
    proc = run_cli("train", *TINY, f"aggregator={name}", "aggregator.apply_to=[critic,actor]",
                   f"run_dir={tmp_path / 'run'}")
    assert_usage_error(proc, f"aggregator.apply_to=[..., actor] is not allowed with aggregator={name}")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("name", ["dwa", "rlw"])  # uw's update through MT-SAC: test_graph_update (CI time)
def test_trains_on_mt10_and_logs_its_weights(tmp_path, name):
    run_dir = tmp_path / name
    extra = ["aggregator.window=5"] if name == "dwa" else []  # 40 updates: past DWA's warm-up of 2 windows
    proc = run_cli("train", *TINY, f"aggregator={name}", *extra, "train.total_steps=600", "eval.every=600",
                   f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert results["aggregator"] == name
    networks = ("critic", "actor") if name == "rlw" else ("critic",)
    for network in networks:
        weights = torch.tensor(last_task_weights(run_dir, network, results["tasks"]))
        assert torch.isfinite(weights).all() and (weights > 0).all()
        assert not torch.allclose(weights, weights[0].expand(10)), weights  # they have moved apart
        if name == "rlw":
            assert float(weights.sum()) == pytest.approx(1.0, abs=1e-4)
        if name == "dwa":
            assert float(weights.sum()) == pytest.approx(10.0, abs=1e-3)
