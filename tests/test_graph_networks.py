"""``train.compile=graph`` for every network: the compiled update equals the eager one.

Each task-conditioned network (FiLM, CARE, MOORE, Soft Modules, PaCo; the shared and multi-head MLP are
tests/test_graph_update.py's), tiny sizes, k=3 tasks, PCGrad (one-pass per-task gradients inside the graph),
two updates, compiled with ``aot_eager``: Dynamo's capture with ``fullgraph=True`` (a graph break is an error) and
AOTAutograd's functionalisation, where a network could break, without inductor's code generation
(60-190 s per network on CPU). ``scripts/graph_networks.py`` runs the same comparison with inductor.
"""

from __future__ import annotations

import pytest
import torch

from mtrl_famo.config import AGGREGATOR_SCHEMAS, AgentConfig
from mtrl_famo.graph_update import GraphUpdate
from mtrl_famo.sac import MTSAC
from test_graph_update import ACT, K, OBS, agent_tensors, assert_same, random_batches

#: As few layers, experts and sets as each network allows (compile time grows with the traced ops, CI time).
SMALL = dict(hidden_sizes=[16], encoder_width=8, encoder_depth=1, embedding_dim=8, module_width=8, routing_width=8,
             num_experts=2, num_modules=2, module_layers=2, num_parameter_sets=2)
#: agent.network overrides per case; Soft Modules as its MT10 preset, with the temperature task weights.
CASES = {"film": dict(network="film"), "care": dict(network="care"), "moore": dict(network="moore"),
         "soft_modules": dict(network="soft_modules", task_loss_weights="temperature"),
         "paco": dict(network="paco")}


def make_agent(case: str, backend=None) -> MTSAC:
    torch.manual_seed(0)
    aggregator = AGGREGATOR_SCHEMAS["pcgrad"]()
    agent = MTSAC(OBS, ACT, K, AgentConfig(init="reference", grad_clip=1.0, **SMALL, **CASES[case]), aggregator,
                  immediate_checks=False)
    if backend is not None:
        agent.graph_update = GraphUpdate(agent, backend=backend)
    return agent


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_update_equals_eager_for_every_network(case):
    eager, graph = make_agent(case), make_agent(case, backend="aot_eager")
    for batch in random_batches(2):  # no diagnostics: a second graph, twice the compile time (CI time)
        assert_same(eager.update(batch), graph.update(batch))
    assert_same(agent_tensors(eager), agent_tensors(graph))
    assert graph.actor_opt.state[next(graph.actor.parameters())]["step"].item() == 2
