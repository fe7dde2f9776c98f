"""Networks of MT-SAC: the tanh-Gaussian actor and twin Q critic (:mod:`.policy`) over one network per
``agent.network``: ``mlp`` (:mod:`.mlp`); ``film``, ``care``, ``moore``, ``soft_modules``, ``paco``
(:mod:`.registry`, one module each)."""

from mtrl_famo.networks.mlp import MultiHeadMLP, TaskHeads, make_mlp, mlp
from mtrl_famo.networks.policy import Actor, TwinQ, squashed_sample
from mtrl_famo.networks.registry import make_task_network, network_options

__all__ = ["Actor", "MultiHeadMLP", "TaskHeads", "TwinQ", "make_mlp", "make_task_network", "mlp",
           "network_options", "squashed_sample"]
