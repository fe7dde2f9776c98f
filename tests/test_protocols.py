"""Protocol presets and the settings they set: multi-head networks, clipping, init, log-std modes,
shared temperature, Q clipping; every preset against docs/protocols.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY, assert_usage_error, run_cli
from mtrl_famo.aggregators.per_task_grads import per_task_gradients, per_task_gradients_loop
from mtrl_famo.buffer import Batch
from mtrl_famo.config import AGGREGATOR_SCHEMAS, PROTOCOLS, AgentConfig, ConfigError
from mtrl_famo.networks import Actor, TwinQ
from mtrl_famo.runconfig import compose_config
from mtrl_famo.sac import MTSAC, actor_loss_fn, critic_loss_fn

OBS = 39  # Meta-World's observation width before the task one-hot
ACT = 4
TABLE = Path(__file__).resolve().parents[1] / "docs" / "protocols.md"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("k, multi_head, actor_params, critic_params", [
    (10, False, 344_008, 685_602),
    (10, True, 372_880, 692_820),   # Meta-World+ MTMHSAC on MT10
    (50, False, 360_008, 717_602),
    (50, True, 517_200, 756_900),   # Meta-World+ MTMHSAC on MT50
])
def test_parameter_counts_match_the_reference(k, multi_head, actor_params, critic_params):
    actor = Actor(OBS + k, ACT, [400, 400, 400], num_tasks=k, multi_head=multi_head)
    critic = TwinQ(OBS + k, ACT, [400, 400, 400], num_tasks=k, multi_head=multi_head)
    assert (n_params(actor), n_params(critic)) == (actor_params, critic_params)


def _task_batch(k: int, b: int, seed: int = 0) -> Batch:
    """Task-grouped random transitions whose observations end in the right one-hot."""
    g = torch.Generator().manual_seed(seed)
    onehot = torch.eye(k)[:, None, :].expand(k, b, k)
    obs = lambda: torch.cat([torch.rand(k, b, OBS, generator=g) * 2 - 1, onehot], -1)  # noqa: E731
    return Batch(obs(), torch.rand(k, b, ACT, generator=g) * 2 - 1, torch.rand(k, b, generator=g) * 10, obs(),
                 torch.zeros(k, b))


def test_multi_head_picks_each_rows_own_head():
    k = 3
    actor = Actor(OBS + k, ACT, [8], num_tasks=k, multi_head=True)
    batch = _task_batch(k, 5)
    mean, _ = actor(batch.obs)  # [k, 5, ACT]
    head = actor.net.head.linear
    features = actor.net.trunk(batch.obs)
    for i in range(k):  # task i's rows go through the i-th block of the stacked output layer
        rows = slice(i * 2 * ACT, (i + 1) * 2 * ACT)
        expected = features[i] @ head.weight[rows].T + head.bias[rows]
        torch.testing.assert_close(mean[i], expected[:, :ACT])


def test_multi_head_per_task_gradients_equal_the_k_pass_reference():
    k = 4
    torch.manual_seed(0)
    actor = Actor(OBS + k, ACT, [16, 16], num_tasks=k, multi_head=True, log_std_mode="clip", init="reference")
    critic = TwinQ(OBS + k, ACT, [16, 16], num_tasks=k, multi_head=True, init="reference")
    batch = _task_batch(k, 6)
    target = batch.rewards
    noise = torch.randn(k, 6, ACT)
    alpha = torch.full((k, 1), 0.2)
    for module, loss, args, aux in [(critic, critic_loss_fn(critic, max_q_value=5.0), (batch.obs, batch.actions, target),
                                     False),
                                    (actor, actor_loss_fn(actor, critic), (batch.obs, noise, alpha), True)]:
        one_pass = per_task_gradients(module, loss, args, return_losses=True, has_aux=aux)
        k_pass = per_task_gradients_loop(module, loss, args, return_losses=True, has_aux=aux)
        for a, b in zip(one_pass, k_pass):
            if isinstance(a, torch.Tensor):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        G = one_pass[0]
        head_columns = _head_columns(module, k)
        for i, columns in enumerate(head_columns):  # task i's gradient is zero on every other task's head
            others = torch.cat([c for j, c in enumerate(head_columns) if j != i])
            assert G[i, others].abs().max() == 0 and G[i, columns].abs().max() > 0


def _head_columns(module: torch.nn.Module, k: int) -> list[torch.Tensor]:
    """For each task, the columns of ``G`` that belong to its output head(s)."""
    columns: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for name, p in module.named_parameters():
        if ".head." in f".{name}":
            rows_per_task = p.shape[0] // k
            for i in range(k):
                block = torch.zeros(p.shape, dtype=torch.bool)
                block[i * rows_per_task:(i + 1) * rows_per_task] = True
                columns[i] += (offset + torch.flatten(block).nonzero().squeeze(1)).tolist()
        offset += p.numel()
    return [torch.tensor(c) for c in columns]


def _agent(aggregator: str = "mean", **agent_options) -> MTSAC:
    torch.manual_seed(0)
    cfg = AgentConfig(hidden_sizes=[32, 32], **agent_options)
    return MTSAC(OBS + 3, ACT, 3, cfg, AGGREGATOR_SCHEMAS[aggregator]())


def _first_step_grad_norm(agent: MTSAC, name: str) -> float:
    """The global norm of the gradient of a network's first Adam step: its first moment / (1 - beta1)."""
    optimizer = getattr(agent, f"{name}_opt")
    beta1 = optimizer.param_groups[0]["betas"][0]
    moments = [optimizer.state[p]["exp_avg"].reshape(-1) for p in getattr(agent, name).parameters()]
    return torch.linalg.vector_norm(torch.cat(moments)).item() / (1.0 - beta1)


@pytest.mark.parametrize("aggregator", ["mean", "famo", "pcgrad", "cagrad"])
def test_grad_clip_bounds_each_networks_update_norm(aggregator):
    clip = 1e-3
    unclipped, clipped = _agent(aggregator), _agent(aggregator, grad_clip=clip)
    batch = _task_batch(3, 8)
    unclipped.update(batch)
    metrics = clipped.update(batch)
    for name in ("critic", "actor"):
        assert _first_step_grad_norm(unclipped, name) > 10 * clip  # clipping has work to do
        assert _first_step_grad_norm(clipped, name) <= clip * (1 + 1e-4)
        assert metrics[f"grad_norm/{name}"] > clip  # logged: the norm before clipping


@pytest.mark.parametrize("aggregator", ["mean", "famo", "pcgrad", "cagrad"])
def test_multi_head_agent_trains_with_every_aggregator(aggregator):
    agent = _agent(aggregator, multi_head=True, init="reference", log_std_mode="clip", log_std_min=-20.0,
                   adam_eps=1e-5, grad_clip=1.0, max_q_value=5000.0)
    before = [p.detach().clone() for p in agent.actor.net.head.parameters()]
    for seed in range(3):
        metrics = agent.update(_task_batch(3, 8, seed))
    for key in ("losses/critic", "losses/actor", "losses/alpha", "alpha"):
        assert metrics[key].shape == (3,) and torch.isfinite(metrics[key]).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.actor.net.head.parameters()))


def test_shared_alpha_is_one_temperature_for_every_task():
    agent = _agent(shared_alpha=True, init_alpha=0.5)
    assert agent.log_alpha.shape == (1,)
    metrics = agent.update(_task_batch(3, 8))
    assert metrics["alpha"].shape == (3,) and torch.all(metrics["alpha"] == metrics["alpha"][0])
    assert metrics["alpha"][0] != 0.5  # it learned


def test_temperature_loss_reuses_the_actor_steps_forward():
    """One update runs the actor twice: next actions for the target, and the actor loss."""
    agent = _agent()
    calls = []
    agent.actor.register_forward_hook(lambda *_: calls.append(1))
    agent.update(_task_batch(3, 8))
    assert len(calls) == 2


def test_reference_init_and_clip_mode_start_near_unit_sigma():
    actor = Actor(OBS + 10, ACT, [400, 400, 400], -20.0, 2.0, num_tasks=10, init="reference", log_std_mode="clip")
    obs = _task_batch(10, 20).obs
    _, log_std = actor(obs)
    assert log_std.abs().max() < 0.05  # sigma about 1 (our tanh default: about 0.25)
    linear = actor.net[0]
    bound = (6 / linear.in_features) ** 0.5  # He-uniform
    assert linear.weight.abs().max() <= bound and linear.weight.abs().max() > 0.9 * bound
    assert torch.all(linear.bias == 0) and actor.net[-1].weight.abs().max() <= 1e-3
    far = Actor(OBS + 10, ACT, [8], -20.0, 2.0, num_tasks=10, log_std_mode="clip")
    with torch.no_grad():
        far.net[-1].bias.fill_(100.0)
    assert far(obs)[1].max() == 2.0


def test_max_q_value_clips_predictions():
    critic = TwinQ(OBS + 3, ACT, [8], num_tasks=3)
    with torch.no_grad():
        critic.q1[-1].bias.fill_(1e4)
        critic.q2[-1].bias.fill_(1e4)
    batch = _task_batch(3, 4)
    params = dict(critic.named_parameters())
    target = torch.full((3, 4), 10.0)
    clipped = critic_loss_fn(critic, max_q_value=100.0)(params, batch.obs, batch.actions, target)
    torch.testing.assert_close(clipped, torch.full((3,), 2 * 90.0 ** 2))


def _table() -> dict[str, dict[str, str]]:
    """``{key: {protocol: cell}}`` from docs/protocols.md's table."""
    lines = TABLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| key |"))
    header, rows = lines[start], []
    for line in lines[start + 2:]:  # the value table: its header, the rule, then rows up to a blank line
        if not line.startswith("|"):
            break
        rows.append(line)
    columns = [c.strip() for c in header.strip("|").split("|")]
    table = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0].strip("`")] = dict(zip(columns[1:], cells[1:]))
    return table


def test_docs_table_covers_every_protocol_and_every_preset_key():
    table = _table()
    assert set(next(iter(table.values()))) >= set(PROTOCOLS)
    config_dir = Path(__file__).resolve().parents[1] / "configs" / "protocol"
    for protocol in PROTOCOLS:
        preset = yaml.safe_load((config_dir / f"{protocol}.yaml").read_text())
        keys = {f"{group}.{key}" for group, values in preset.items() for key in values if group != "protocol"}
        assert keys <= set(table), f"{protocol}.yaml sets keys missing from docs/protocols.md: {keys - set(table)}"


def _cell(cell: str, benchmark: str):
    """A table cell's value on ``benchmark``: ``A`` on both, or ``A / B`` for MT10 / MT50."""
    parts = cell.split(" / ")
    return yaml.safe_load(parts[0] if benchmark == "mt10" or len(parts) == 1 else parts[1])


@pytest.mark.parametrize("bench", ["mt10", "mt50"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_protocol_resolves_to_the_values_in_docs(protocol, bench):
    cfg = compose_config([f"protocol={protocol}", f"benchmark={bench}"])
    assert cfg.protocol.name == protocol
    for key, cells in _table().items():
        group, field = key.split(".")
        value = getattr(getattr(cfg, group), field)
        assert value == _cell(cells[protocol], bench), f"{key} under protocol={protocol} benchmark={bench}"


def test_param_scaling_actor_is_34m_parameters_on_mt10():
    """The study's 4096-wide MTMHSAC actor, built on the meta device (no memory for its weights)."""
    cfg = compose_config(["protocol=param_scaling", "benchmark=mt10"])
    with torch.device("meta"):
        actor = Actor(OBS + 10, ACT, cfg.agent.hidden_sizes, num_tasks=10, multi_head=cfg.agent.multi_head,
                      init=cfg.agent.init)
    w, k = 4096, 10
    trunk = (OBS + k) * w + w + 2 * (w * w + w)
    heads = k * (w * 2 * ACT + 2 * ACT)
    assert n_params(actor) == trunk + heads == 34_095_184


@pytest.mark.parametrize("protocol, aggregator, apply_to", [
    ("cagrad_paper", "cagrad", ["critic", "actor", "alpha"]),   # CAGrad's _compute_gradient: all three losses
    ("famo_paper", "pcgrad", ["critic", "actor", "alpha"]),
    ("famo_paper", "famo", ["critic"]),                         # FAMO's agent weights the critic only
    ("metaworld_plus", "pcgrad", ["critic", "actor"]),          # its temperature has its own optimizer
])
def test_protocols_route_the_aggregator_options(protocol, aggregator, apply_to):
    cfg = compose_config([f"protocol={protocol}", f"aggregator={aggregator}"])
    assert cfg.aggregator.apply_to == apply_to
    if aggregator == "famo":
        assert cfg.aggregator.scaling == "released" and cfg.aggregator.gamma == 0.01
    if protocol == "metaworld_plus":
        assert cfg.aggregator.order == "shared"


def test_paper_protocols_scale_per_task_numbers_to_mt50():
    cfg = compose_config(["protocol=cagrad_paper", "benchmark=mt50", "aggregator=cagrad"])
    assert (cfg.train.per_task_batch, cfg.train.warmup_steps, cfg.aggregator.c) == (25, 1500 * 50, 0.5)
    famo = compose_config(["protocol=famo_paper", "aggregator=famo"])
    assert famo.aggregator.gamma == 0.01 and famo.agent.shared_alpha


def test_pcgrad_seed_follows_the_run_seed():
    assert compose_config(["aggregator=pcgrad", "seed=7"]).aggregator.seed == 7


@pytest.mark.parametrize("args, expected", [
    (["aggregator=famo", "aggregator.apply_to=[critic,actor]"], "not allowed with aggregator=famo"),
    (["benchmark.max_episode_steps=501"], "benchmark.max_episode_steps=501"),
    (["protocol=nope"], "protocol='nope'"),
    (["agent.init=he"], "agent.init='he'; allowed: torch, reference, orthogonal, xavier"),
    (["agent.log_std_mode=soft"], "agent.log_std_mode='soft'"),
    (["agent.grad_clip=0"], "agent.grad_clip=0.0 must be a number > 0"),
    (["agent.adam_eps=-1"], "agent.adam_eps=-1.0 must be > 0"),
    (["aggregator=famo", "aggregator.apply_to=[critic,alpha]"], "apply_to=[..., alpha] is not allowed with "
                                                                "aggregator=famo"),
])
def test_refused_settings_exit_2_with_one_line(tmp_path, args, expected):
    proc = run_cli("train", *TINY, *args, f"run_dir={tmp_path / 'run'}")
    assert_usage_error(proc, expected)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, expected", [  # in-process (the CLI turns every ConfigError into exit 2, above)
    (["aggregator=uw", "aggregator.apply_to=[critic,alpha]"], "apply_to=[..., alpha] is not allowed with aggregator=uw"),
    (["aggregator.apply_to=[critic,value]"], "aggregator.apply_to has 'value'; allowed: critic, actor, alpha"),
    (["agent.critic_loss_reduction=max"], "agent.critic_loss_reduction='max'; allowed: sum, mean"),
    (["agent.alpha_loss_reduction=sum"], "agent.alpha_loss_reduction='sum'; allowed: task_sum, mean"),
    (["agent.alpha_loss_form=exp"], "agent.alpha_loss_form='exp'; allowed: log_alpha, alpha"),
    (["benchmark.reward_normalization=zscore"], "benchmark.reward_normalization='zscore'; allowed: null"),
    (["benchmark.num_goals=0"], "benchmark.num_goals=0 must be an integer >= 1"),
    (["benchmark.num_goals=51"], "benchmark.num_goals=51; allowed: 1 to 50"),
    (["benchmark.task_onehot=false", "agent.multi_head=true"], "agent.multi_head=true needs benchmark.task_onehot"),
    (["aggregator=pcgrad", "aggregator.order=random"], "aggregator.order='random'; allowed: per_task, shared"),
    (["aggregator=alignedmtl", "aggregator.reduction=max"], "aggregator.reduction='max'; allowed: mean, sum"),
    (["aggregator=nashmtl", "aggregator.max_norm_mode=scale"], "aggregator.max_norm_mode='scale'; allowed: clip"),
    (["aggregator=famo", "aggregator.scaling=both"], "aggregator.scaling='both'; allowed: paper, released"),
    (["protocol.gradient_apply_to=[]"], "protocol.gradient_apply_to=[]; allowed: a non-empty list"),
])
def test_refused_protocol_settings_are_one_line(args, expected):
    with pytest.raises(ConfigError) as error:
        compose_config([*TINY, *args])
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_tiny_multi_head_metaworld_plus_run_trains_end_to_end(tmp_path):
    run_dir = tmp_path / "mwp"
    proc = run_cli("train", *TINY, "protocol=metaworld_plus", "agent.multi_head=true", "agent.hidden_sizes=[32,32]",
                   "train.warmup_steps=200", "train.total_steps=600", "eval.every=600", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["protocol"]["name"] == "metaworld_plus" and saved["agent"]["multi_head"] is True
    assert re.search(r"mean\s*\|", proc.stdout)
