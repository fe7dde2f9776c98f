"""agent.network: FiLM, CARE, MOORE, Soft Modules and PaCo (Meta-World+ reference,
rainx0r/metaworld-algorithms@b025cdb): parameter counts, reference initialisation, each one's defining property,
per-task gradients through them against the k-pass reference, populations (vmap over members) against their
members, and a short real MT10 training of each from the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch.func import functional_call, stack_module_state

from conftest import TINY, assert_usage_error, run_cli
from mtrl_famo.aggregators.per_task_grads import per_task_gradients, per_task_gradients_loop
from mtrl_famo.config import AgentConfig
from mtrl_famo.networks import Actor, TwinQ, network_options
from mtrl_famo.networks.moore import gram_schmidt
from mtrl_famo.sac import actor_loss_fn, critic_loss_fn

OBS = 39  # Meta-World's observation width before the task one-hot
ACT = 4
NETWORKS = ("film", "care", "moore", "soft_modules", "paco")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(network: str, k: int, hidden=(400, 400, 400), **options):
    cfg = AgentConfig(network=network, init="reference", **options)
    kw = dict(num_tasks=k, network=network, network_options=network_options(cfg, k), init="reference")
    return Actor(OBS + k, ACT, list(hidden), log_std_mode="clip", **kw), TwinQ(OBS + k, ACT, list(hidden), **kw)


# Counted from the reference's modules and config defaults (b025cdb config/nn.py, width 400 depth 3;
# examples/multi_task/moore_mt10.py uses MOOREConfig's defaults), Linear(i, o) = i*o + o; the actor's
# input is 39 features -> 2*4 outputs, each of the 2 critics' is 4 + 39 features -> 1 (rl/networks.py:222).
# FiLM (nn/film.py): Embed k*50 + gamma/beta MLP 50-50-50-6 + encoder 39|43-50-50-50 + torso 100-400-400-400-o.
# CARE (nn/care.py): Embed k*50 + context MLP 50-50-50-50 + attention MLP 50-50-50-E + E expert MLPs
#   39|43-50-50-50 + torso 100-400-400-400-o; E = 6 on MT10, 10 on MT50 (config/nn.py:127-129).
# MOORE (nn/moore.py): task Dense k*E (no bias) + E experts 39|43-400-400-400 + k heads 400-o;
#   E = 4 on MT10, 6 on MT50 (config/nn.py:152-154).
# Soft Modules (nn/soft_modules.py, softmodules_mt10.py: SoftModulesConfig defaults; n modules x L layers,
#   2x2 on MT10, 4x4 on MT50, config/nn.py:89-95): f 39|43-400-400 + z k-400 + task fc 400-256-256 + routing
#   W_u (l n^2)-256 for l = 1..L-1 and W_d 256-n^2 (256-n last) + modules n x 400-256, (L-1) n x 256-256 + head 256-o.
# PaCo (nn/paco.py): task Dense k-K (with bias) + K sets of 39|43-400-400-400-o; K = 5 on MT10 (config/nn.py:106),
#   20 on MT50 (examples/multi_task/paco_mt10.py:39-50, an MT50 run).
@pytest.mark.parametrize("network, k, actor_params, critic_params", [
    ("film", 10, 377_414, 749_614), ("film", 50, 379_414, 753_614),
    ("care", 10, 420_564, 837_914), ("care", 50, 451_168, 900_722),
    ("moore", 10, 1_379_320, 2_715_300), ("moore", 50, 2_181_500, 4_101_500),
    ("soft_modules", 10, 691_022, 1_381_646), ("soft_modules", 50, 1_606_140, 3_211_882),
    ("paco", 10, 1_700_095, 3_388_120), ("paco", 50, 6_801_180, 13_554_080),
])
def test_parameter_counts_match_the_reference(network, k, actor_params, critic_params):
    actor, critic = build(network, k)
    assert (n_params(actor), n_params(critic)) == (actor_params, critic_params)


def _output_layer(net: torch.nn.Module) -> torch.nn.Linear:
    return {"MOORENetwork": lambda: net.head.linear, "SoftModulesNetwork": lambda: net.output_head,
            "PaCoNetwork": lambda: net.layers[-1]}.get(
        type(net).__name__, lambda: net.torso[-1])()


@pytest.mark.parametrize("network", NETWORKS)
def test_reference_initialisation(network):
    torch.manual_seed(0)
    actor, critic = build(network, 10, hidden=(64, 64))
    for net, bound in ((actor.net, 1e-3), (critic.q1, 3e-3)):
        head = _output_layer(net)
        assert 0.5 * bound < head.weight.abs().max() <= bound and head.bias.abs().max() <= bound
        small = {id(head.weight), id(head.bias)} | {id(p) for n, p in net.named_parameters() if "prob_output" in n}
        for name, p in net.named_parameters():  # He-uniform weights within sqrt(6 / fan_in), zero biases
            if id(p) in small or "embedding.weight" in name:
                continue
            if name.endswith("bias"):
                assert p.abs().max() == 0, name
            else:
                fan_in = p.shape[-2] if p.dim() == 3 or name.endswith("task_weights") else p.shape[-1]
                assert 0.5 * (6 / fan_in) ** 0.5 < p.abs().max() <= (6 / fan_in) ** 0.5, name
    if network == "soft_modules":  # the routing's output layers: U(-1e-3, 1e-3) kernel, zero bias
        for layer in actor.net.prob_output:
            assert layer.weight.abs().max() <= 1e-3 and layer.bias.abs().max() == 0


def _onehot_obs(k: int, b: int, g: torch.Generator) -> torch.Tensor:
    """``[k, b, OBS + k]`` random observations, row block i ending in task i's one-hot."""
    return torch.cat([torch.rand(k, b, OBS, generator=g) * 2 - 1, torch.eye(k)[:, None].expand(k, b, k)], -1)


def test_film_scale_and_shift_depend_on_the_task_alone():
    torch.manual_seed(0)
    actor, _ = build("film", 5, hidden=(32,))
    film, seen = actor.net, []
    film.conditioning.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    g = torch.Generator().manual_seed(1)
    obs_a, obs_b = _onehot_obs(5, 7, g), _onehot_obs(5, 7, g)  # same tasks, other observations
    out_a, out_b = actor(obs_a)[0], actor(obs_b)[0]
    assert not torch.allclose(out_a, out_b)
    torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)  # [k, b, 2 (depth + 1)]
    torch.testing.assert_close(seen[0], seen[0][:, :1].expand_as(seen[0]))  # one value per task, on all its rows
    assert torch.cdist(seen[0][:, 0], seen[0][:, 0]).triu(1).gt(0).sum() == 5 * 4 // 2  # tasks differ
    # and FiLM applies them: zero scales and shifts make the encoder's output zero
    encoder_out = []
    film.torso.register_forward_hook(lambda m, i, out: encoder_out.append(i[0][..., :50].detach()))
    film.conditioning[-1].bias.data.zero_(), film.conditioning[-1].weight.data.zero_()
    actor(obs_a)
    assert encoder_out[-1].abs().max() == 0


def test_care_attention_weights_sum_to_one_per_task():
    torch.manual_seed(0)
    actor, _ = build("care", 10, hidden=(32,))
    onehot = torch.eye(10)[torch.randint(0, 10, (64,))]
    _, attention = actor.net.context_and_attention(onehot)  # [64, 6]
    assert attention.shape == (64, 6) and (attention > 0).all()
    torch.testing.assert_close(attention.sum(-1), torch.ones(64))
    _, per_task = actor.net.context_and_attention(torch.eye(10))
    torch.testing.assert_close(attention, onehot @ per_task)  # a function of the task alone
    assert per_task.std(0).max() > 0  # not the same for every task


def test_moore_expert_representations_are_orthonormal_per_sample():
    torch.manual_seed(0)
    actor, critic = build("moore", 10, hidden=(64, 64))
    x = torch.randn(3, 20, OBS)
    reps = actor.net.expert_representations(x)  # [3, 20, 4, 64]
    assert reps.shape == (3, 20, 4, 64)
    torch.testing.assert_close(reps @ reps.transpose(-1, -2), torch.eye(4).expand(3, 20, 4, 4), atol=1e-5, rtol=0)
    raw = actor.net.experts(x)
    torch.testing.assert_close(gram_schmidt(raw), reps)
    # the first direction is the first expert's, normalised; together they span the raw outputs
    torch.testing.assert_close(reps[..., 0, :], torch.nn.functional.normalize(raw[..., 0, :], dim=-1))
    torch.testing.assert_close((raw @ reps.transpose(-1, -2)) @ reps, raw, atol=1e-4, rtol=1e-4)


def test_soft_modules_routing_weights_are_distributions_over_the_previous_layers_modules():
    torch.manual_seed(0)
    actor, _ = build("soft_modules", 50, module_width=32, routing_width=32, embedding_dim=32)  # 4 x 4 modules
    g = torch.Generator().manual_seed(3)
    x, onehot = torch.rand(64, OBS, generator=g), torch.eye(50)[torch.randint(0, 50, (64,), generator=g)]
    probs = actor.net.routing(actor.net.embeddings(x, onehot)[1])
    assert [tuple(p.shape) for p in probs] == [(64, 4, 4)] * 3 + [(64, 4)]
    for p in probs:
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
    other_task = actor.net.routing(actor.net.embeddings(x, onehot.roll(1, dims=0))[1])  # same observations
    assert all(not torch.allclose(a, b) for a, b in zip(probs, other_task))
    # the forward uses them: uniform routing (W_d = 0) changes the output
    before = actor.net(x, onehot)
    for layer in actor.net.prob_output:
        layer.weight.data.zero_()
    assert not torch.allclose(before, actor.net(x, onehot))


def test_paco_task_parameters_are_the_composition_of_the_shared_sets():
    torch.manual_seed(0)
    actor, _ = build("paco", 10, hidden=(32, 32))
    net = actor.net
    x = torch.randn(6, OBS)
    for task in (0, 7):
        onehot = torch.eye(10)[task].expand(6, 10)
        w = net.task_weights.weight[:, task] + net.task_weights.bias  # [K]: the task's column, plus the bias
        torch.testing.assert_close(net.composition(onehot), w.expand(6, 5))
        h = x
        for i, layer in enumerate(net.layers):  # a plain MLP with W_t = sum_k w_k W_k, b_t = sum_k w_k b_k
            h = h @ torch.einsum("k,kio->io", w, layer.weight) + w @ layer.bias
            h = torch.relu(h) if i < len(net.layers) - 1 else h
        torch.testing.assert_close(net(x, onehot), h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("network", NETWORKS)
def test_per_task_gradients_equal_the_k_pass_reference_and_vmap_over_members(network):
    k, b = 4, 6
    torch.manual_seed(0)
    actor, critic = build(network, k, hidden=(16, 16))
    g = torch.Generator().manual_seed(2)
    obs, actions = _onehot_obs(k, b, g), torch.rand(k, b, ACT, generator=g) * 2 - 1
    noise, alpha, target = torch.randn(k, b, ACT, generator=g), torch.full((k, 1), 0.2), torch.rand(k, b, generator=g)
    for module, loss, args, aux in [(critic, critic_loss_fn(critic, max_q_value=5.0), (obs, actions, target), False),
                                    (actor, actor_loss_fn(actor, critic), (obs, noise, alpha), True)]:
        one_pass = per_task_gradients(module, loss, args, return_losses=True, has_aux=aux)
        k_pass = per_task_gradients_loop(module, loss, args, return_losses=True, has_aux=aux)
        for x, y in zip(one_pass, k_pass):
            if isinstance(x, torch.Tensor):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
        assert one_pass[0].abs().sum(1).gt(0).all()
    # a population: vmap over stacked members' parameters equals each member's own forward
    members = [build(network, k, hidden=(16, 16))[1] for _ in range(2)]
    params, buffers = stack_module_state(members)
    q1, q2 = torch.func.vmap(lambda p, bu: functional_call(members[0], (p, bu), (obs, actions)))(params, buffers)
    for m, member in enumerate(members):
        torch.testing.assert_close(q1[m], member(obs, actions)[0])
        torch.testing.assert_close(q2[m], member(obs, actions)[1])


@pytest.mark.parametrize("network", NETWORKS)
def test_population_update_is_the_members_updates(network):
    """StackedMTSAC (vmap of the one update over members) against each member's own MTSAC, PCGrad (one-pass
    per-task gradients inside the member vmap): three updates' metrics, then the written-back networks."""
    import numpy as np

    from mtrl_famo.buffer import ReplayBuffer
    from mtrl_famo.config import AGGREGATOR_SCHEMAS
    from mtrl_famo.sac import MTSAC
    from mtrl_famo.stacked_sac import StackedMTSAC

    small = dict(hidden_sizes=[16, 16], encoder_width=8, embedding_dim=8, module_width=8, routing_width=8)

    def agent(seed):
        torch.manual_seed(seed)
        agg = AGGREGATOR_SCHEMAS["pcgrad"]()
        agg.seed = seed
        return MTSAC(12, ACT, 3, AgentConfig(network=network, init="reference", **small), agg, "cpu",
                     immediate_checks=False)

    def buffer(seed):
        rng = np.random.default_rng(seed)
        buf = ReplayBuffer(3, 64, 12, ACT)
        for _ in range(20):
            obs, next_obs = rng.normal(size=(2, 3, 12))
            obs[:, -3:] = next_obs[:, -3:] = np.eye(3)
            buf.add(obs, rng.uniform(-1, 1, (3, ACT)), rng.normal(size=3), next_obs, rng.uniform(size=3) < 0.1)
        return buf

    singles, population, buffers = [agent(s) for s in (0, 1)], StackedMTSAC([agent(s) for s in (0, 1)]), \
        [buffer(s) for s in (0, 1)]
    for _ in range(3):
        single = [a.update(b.sample(8, a.generator)) for a, b in zip(singles, buffers)]
        stacked = population.update(population.sample(buffers, 8))
        for key in stacked:
            torch.testing.assert_close(stacked[key], torch.stack([torch.as_tensor(m[key]) for m in single]).to(
                stacked[key].dtype), rtol=1e-4, atol=1e-5, msg=key)
    population.write_back()
    for single, member in zip(singles, population.members):
        for (name, p), q in zip(single.actor.named_parameters(), member.actor.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("network", NETWORKS)
def test_each_network_trains_on_mt10_from_the_cli_then_evaluates(tmp_path, network):
    """One gradient aggregator (PCGrad) and one loss aggregator (FAMO, on the critic) per network; then
    ``eval`` rebuilds the network from the run's config and loads its checkpoint (and refuses another
    network); ``report`` names the network in the groups' labels (these three once, for MOORE: CI time)."""
    for aggregator in ("pcgrad", "famo"):
        run_dir = tmp_path / aggregator
        proc = run_cli("train", *TINY, f"agent.network={network}", "agent.init=reference", "agent.encoder_width=16",
                       "agent.embedding_dim=16", "agent.module_width=16", "agent.routing_width=16",
                       f"aggregator={aggregator}", "train.total_steps=300",
                       "eval.every=300", f"run_dir={run_dir}")
        assert proc.returncode == 0, proc.stderr
        results = json.loads((run_dir / "results.json").read_text())
        assert results["aggregator"] == aggregator and len(results["tasks"]) == 10
        assert results["network"] == network
    if network != "moore":
        return
    proc = run_cli("eval", f"run_dir={run_dir}", "eval.episodes=1", "device=cpu")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "report"  # the report names the network in every group's label
    proc = run_cli("report", str(tmp_path / "pcgrad"), str(tmp_path / "famo"), "--out", str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    table = (out / "report.md").read_text()
    for aggregator in ("pcgrad", "famo"):  # the group's row: its short label, then its settings (the network)
        rows = [[cell.strip() for cell in line.split("|")[1:3]] for line in table.splitlines() if line.startswith("|")]
        assert [aggregator, f"agent.network={network}"] in rows, table
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace(f"network: {network}", "network: mlp"))
    proc = run_cli("eval", f"run_dir={run_dir}", "eval.episodes=1", "device=cpu")
    assert proc.returncode != 0 and f"holds agent.network={network} networks" in proc.stderr


def test_bad_network_settings_are_one_line_usage_errors():
    assert_usage_error(run_cli("train", "agent.network=perceiver", "train.total_steps=10"),
                       "agent.network='perceiver'; allowed: mlp, film, care, moore, soft_modules, paco")
    assert_usage_error(run_cli("train", "agent.network=moore", "train.total_steps=10"),
                       "agent.init='torch' with agent.network=moore")
    assert_usage_error(run_cli("train", "agent.network=care", "agent.init=reference", "agent.multi_head=true",
                               "train.total_steps=10"), "agent.multi_head=true is for agent.network=mlp")


def test_softmodules_mt10_preset_is_the_reference_example():
    """experiment=softmodules_mt10: metaworld_plus with examples/multi_task/softmodules_mt10.py's settings."""
    from mtrl_famo.runconfig import compose_config

    ag = compose_config(["experiment=softmodules_mt10"]).agent
    assert (ag.network, ag.grad_clip, ag.task_loss_weights, ag.init) == ("soft_modules", 1.0, "temperature", "reference")


def test_moore_mt10_preset_is_the_reference_example():
    """experiment=moore_mt10: metaworld_plus with examples/multi_task/moore_mt10.py's settings (b025cdb)."""
    from mtrl_famo.runconfig import compose_config
    from mtrl_famo.sac import MTSAC

    cfg = compose_config(["experiment=moore_mt10"])
    ag = cfg.agent
    assert (cfg.protocol.name, ag.network, ag.alpha_lr, ag.actor_lr, ag.critic_lr, ag.log_std_min, ag.log_std_max,
            ag.grad_clip, ag.init) == ("metaworld_plus", "moore", 1e-4, 3e-4, 3e-4, -10.0, 2.0, 1.0, "reference")
    agent = MTSAC(OBS + 10, ACT, 10, ag, cfg.aggregator)
    assert (n_params(agent.actor), n_params(agent.critic)) == (1_379_320, 2_715_300)
