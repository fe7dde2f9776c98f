"""``train.compile=graph``: the whole update as one compiled graph equals the eager update.

Real MT-SAC networks and aggregators on a random task-grouped batch. Most tests use the
``aot_eager`` backend: it runs the same capture (Dynamo, ``fullgraph=True``: any graph
break is an error) and the same functionalisation as the default ``inductor``, and
compiles in seconds instead of tens of seconds; one test runs ``inductor`` itself.
The file builds more compiled agents than torch.compile keeps per code object (8): run in
one process, it also checks that every agent compiles a code object of its own.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from conftest import TINY, assert_usage_error, run_cli
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, CRITIC_ONLY_AGGREGATORS, AgentConfig
from mtrl_famo.graph_update import GraphUpdate
from mtrl_famo.sac import MTSAC

K, PER_TASK, OBS, ACT = 3, 8, 12, 4
OPTIONS = {"plain": {}, "options": dict(multi_head=True, grad_clip=0.5, shared_alpha=True, max_q_value=2.0)}


def random_batches(n: int) -> list[Batch]:
    """``n`` task-grouped batches ``[K, PER_TASK, ...]`` whose observations end in the task one-hot."""
    generator = torch.Generator().manual_seed(1)
    one_hot = torch.eye(K)[:, None, :].expand(K, PER_TASK, K)

    def obs() -> torch.Tensor:
        return torch.cat([torch.randn(K, PER_TASK, OBS - K, generator=generator), one_hot], -1)

    return [Batch(obs(), torch.rand(K, PER_TASK, ACT, generator=generator) * 2 - 1,
                  torch.rand(K, PER_TASK, generator=generator), obs(),
                  (torch.rand(K, PER_TASK, generator=generator) < 0.1).float()) for _ in range(n)]


def make_agent(aggregator: str, options: str = "plain", backend=None) -> MTSAC:
    """An agent seeded alike every time; with ``backend``, its update is the compiled graph."""
    torch.manual_seed(0)
    apply_to = ["critic"] if aggregator in CRITIC_ONLY_AGGREGATORS else ["critic", "actor"]
    agent = MTSAC(OBS, ACT, K, AgentConfig(hidden_sizes=[32, 32], **OPTIONS[options]),
                  AGGREGATOR_SCHEMAS[aggregator](apply_to=apply_to), immediate_checks=False)
    if backend is not None:
        agent.graph_update = GraphUpdate(agent, backend=backend)
    return agent


def agent_tensors(agent: MTSAC) -> dict[str, torch.Tensor]:
    """Everything an update changes: networks, target, temperatures, optimizer and aggregator state."""
    out = {f"{name}.{key}": value for name, module in
           (("actor", agent.actor), ("critic", agent.critic), ("target", agent.critic_target))
           for key, value in module.state_dict().items()}
    out["log_alpha"] = agent.log_alpha
    for name, opt in (("actor_opt", agent.actor_opt), ("critic_opt", agent.critic_opt), ("alpha_opt", agent.alpha_opt)):
        for i, state in enumerate(opt.state.values()):
            out.update({f"{name}.{i}.{key}": value for key, value in state.items()})
    for name, aggregator in agent.aggregators.items():
        for key, value in aggregator.state_dict().items():
            if isinstance(value, torch.Tensor):
                out[f"aggregator.{name}.{key}"] = value
            elif isinstance(value, int):  # PCGrad's call count: the orders drawn so far
                out[f"aggregator.{name}.{key}"] = torch.tensor(value)
    return out


def assert_same(eager: dict[str, torch.Tensor], graph: dict[str, torch.Tensor]) -> None:
    assert eager.keys() == graph.keys()
    for key in eager:
        torch.testing.assert_close(graph[key].double(), eager[key].double(), rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("aggregator, options", [("mean", "options"), ("famo", "plain"),
                                                 ("pcgrad", "plain"), ("cagrad", "options"), ("imtlg", "plain"),
                                                 ("alignedmtl", "plain"), ("uw", "plain"), ("rlw", "plain")])
def test_graph_update_equals_eager_and_compiles_once_per_diagnostics_value(aggregator, options):
    eager = make_agent(aggregator, options)
    counter = CompileCounterWithBackend("aot_eager")
    graph = make_agent(aggregator, options, backend=counter)
    for i, batch in enumerate(random_batches(5)):
        diagnostics = i in (1, 3)
        metrics_eager, metrics_graph = eager.update(batch, diagnostics), graph.update(batch, diagnostics)
        assert_same(metrics_eager, metrics_graph)
    assert_same(agent_tensors(eager), agent_tensors(graph))
    # One graph without diagnostics and one with, each captured whole and never again: the
    # step counters are tensors and the random draws are inputs, so nothing recompiles.
    assert counter.frame_count == 2
    assert graph.actor_opt.state[next(graph.actor.parameters())]["step"].item() == 5


def test_graph_update_with_the_default_backend_equals_eager():
    eager, graph = make_agent("famo"), make_agent("famo", backend="inductor")
    for batch in random_batches(3):
        assert_same(eager.update(batch), graph.update(batch))
    assert_same(agent_tensors(eager), agent_tensors(graph))


def test_a_run_may_switch_between_eager_and_graph_on_resume():
    """The graph update steps the optimizers' own state, so checkpoints are shared: eager for
    two updates, saved, loaded into a compiled agent, two more updates = four eager updates."""
    batches = random_batches(4)
    eager = make_agent("famo")  # loading replaces the Adam states of the agent and of FAMO's logits
    for batch in batches:
        eager.update(batch)
    first = make_agent("famo")
    for batch in batches[:2]:
        first.update(batch)
    resumed = make_agent("famo", backend="aot_eager")
    resumed.load_state_dict(first.state_dict())
    resumed.generator.set_state(first.generator.get_state())
    for batch in batches[2:]:
        resumed.update(batch)
    assert_same(agent_tensors(eager), agent_tensors(resumed))


def test_graph_mode_refuses_aggregators_it_cannot_capture(tmp_path):
    proc = run_cli("train", *TINY, "train.compile=graph", "aggregator=upgrad", f"run_dir={tmp_path / 'run'}")
    assert_usage_error(proc, "train.compile=graph does not support aggregator='upgrad'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("aggregator", ["mean", "famo", "pcgrad"])
def test_a_compiled_population_equals_its_members_single_eager_runs(aggregator):
    """Issue 21: the vmapped update of 3 members compiled as one graph, against each member's single
    eager agent (its own seed, batches and streams), with the population tests' tolerances."""
    from mtrl_famo.stacked_sac import StackedMTSAC

    def member(seed: int) -> MTSAC:
        torch.manual_seed(seed)
        apply_to = ["critic"] if aggregator in CRITIC_ONLY_AGGREGATORS else ["critic", "actor"]
        options = {"seed": seed} if aggregator == "pcgrad" else {}
        return MTSAC(OBS, ACT, K, AgentConfig(hidden_sizes=[32, 32]),
                     AGGREGATOR_SCHEMAS[aggregator](apply_to=apply_to, **options), immediate_checks=False)

    seeds = (0, 1, 2)
    singles = [member(s) for s in seeds]
    population = StackedMTSAC([member(s) for s in seeds], compile=True, backend="aot_eager")
    counter = CompileCounterWithBackend("aot_eager")
    population._update = torch.compile(population._update._torchdynamo_orig_callable, fullgraph=True,
                                       dynamic=False, backend=counter)
    batches = [random_batches(4) for _ in seeds]
    for step in range(4):
        diagnostics = step == 2
        single = [a.update(b[step], diagnostics) for a, b in zip(singles, batches)]
        stacked = population.update(Batch(*(torch.stack(f) for f in zip(*(b[step] for b in batches)))), diagnostics)
        assert stacked.keys() == single[0].keys()
        for key, value in stacked.items():
            expected = torch.stack([m[key] for m in single]).to(value.dtype)
            torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5, msg=key)
    assert counter.frame_count == 2  # one graph per diagnostics value
    population.write_back()
    for single, member_agent in zip(singles, population.members):
        assert_same(agent_tensors(single), agent_tensors(member_agent))
