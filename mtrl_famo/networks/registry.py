"""``agent.network``: which network the actor and both critics use, and its reference options.

``mlp`` is :mod:`~mtrl_famo.networks.mlp` (shared, or multi-head with ``agent.multi_head``); the others
are task-conditioned: they take the observation features and the task one-hot apart, as the Meta-World+
reference does (``x[..., -num_tasks:]`` and ``x[..., :-num_tasks]`` in each of its ``nn/*.py``).
Defaults: rainx0r/metaworld-algorithms@b025cdb0baab80975e5edcefc41b4b44857389f8 ``config/nn.py``.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from mtrl_famo.config import NETWORK_NAMES
from mtrl_famo.networks.care import CARENetwork
from mtrl_famo.networks.film import FiLMNetwork
from mtrl_famo.networks.moore import MOORENetwork
from mtrl_famo.networks.paco import PaCoNetwork
from mtrl_famo.networks.soft_modules import SoftModulesNetwork

TASK_NETWORKS = {"film": FiLMNetwork, "care": CARENetwork, "moore": MOORENetwork, "soft_modules": SoftModulesNetwork,
                 "paco": PaCoNetwork}
assert set(TASK_NETWORKS) | {"mlp"} == set(NETWORK_NAMES)

#: ``agent.num_experts=null``: the reference's per-benchmark number of experts, by number of tasks
#: (MOORE config/nn.py:152-154 "4 for MT10 and 6 for MT50"; CARE config/nn.py:127-129 "6 for MT10, 10 for MT50").
NUM_EXPERTS = {"moore": {10: 4, 50: 6}, "care": {10: 6, 50: 10}}
DEFAULT_NUM_EXPERTS = {"moore": 4, "care": 6}  # MOOREConfig/CAREConfig defaults (config/nn.py:127,152), other k
#: Soft Modules' modules per layer and layers, by number of tasks (config/nn.py:89-95 "2 for MT10, 4 for MT50";
#: SoftModulesConfig's defaults, 2 and 2, for any other k)
SOFT_MODULES = {10: 2, 50: 4}
#: ``agent.num_parameter_sets=null``: PaCo 5 (PaCoConfig default, config/nn.py:106; MT10 and any other k),
#: 20 on MT50 (examples/multi_task/paco_mt10.py:39-50, the reference's MT50 run)
PARAMETER_SETS = {50: 20}
#: ``agent.embedding_dim=null``: FiLM/CARE 50 (config/nn.py:124,143), Soft Modules 400 (config/nn.py:97)
EMBEDDING_DIM = {"film": 50, "care": 50, "soft_modules": 400}


def network_options(cfg: Any, num_tasks: int) -> dict[str, Any]:
    """The keyword options of ``cfg.network`` (an :class:`~mtrl_famo.config.AgentConfig`) for ``num_tasks``."""
    embedding_dim = cfg.embedding_dim if cfg.embedding_dim is not None else EMBEDDING_DIM.get(cfg.network)
    if cfg.network == "soft_modules":
        return dict(num_modules=cfg.num_modules if cfg.num_modules is not None else SOFT_MODULES.get(num_tasks, 2),
                    depth=cfg.module_layers if cfg.module_layers is not None else SOFT_MODULES.get(num_tasks, 2),
                    width=cfg.routing_width, module_width=cfg.module_width, embedding_dim=embedding_dim)
    if cfg.network == "paco":
        return dict(num_parameter_sets=cfg.num_parameter_sets if cfg.num_parameter_sets is not None
                    else PARAMETER_SETS.get(num_tasks, 5))
    if cfg.network == "film":
        return dict(embedding_dim=embedding_dim, encoder_width=cfg.encoder_width, encoder_depth=cfg.encoder_depth)
    if cfg.network in NUM_EXPERTS:
        experts = cfg.num_experts if cfg.num_experts is not None else \
            NUM_EXPERTS[cfg.network].get(num_tasks, DEFAULT_NUM_EXPERTS[cfg.network])
        if cfg.network == "moore":
            return dict(num_experts=experts)
        return dict(num_experts=experts, embedding_dim=embedding_dim, encoder_width=cfg.encoder_width,
                    encoder_depth=cfg.encoder_depth, encoder_temperature=cfg.encoder_temperature)
    return {}


def make_task_network(name: str, in_dim: int, out_dim: int, num_tasks: int, widths: Sequence[int],
                      head_bound: float, options: dict[str, Any]) -> nn.Module:
    """A task-conditioned network ``forward(x [..., in_dim], task_onehot [..., num_tasks]) -> [..., out_dim]``."""
    if name not in TASK_NETWORKS:
        raise ValueError(f"network={name!r}; allowed: {', '.join(TASK_NETWORKS)}")
    return TASK_NETWORKS[name](in_dim, out_dim, num_tasks, widths, head_bound, **options)
