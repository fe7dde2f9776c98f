"""Typed configuration schema for mtrl-famo.

The YAML tree under ``configs/`` picks the defaults; these dataclasses are the
schema Hydra/OmegaConf check every value against (types, unknown keys), and
``config_checks.validate`` checks what types alone cannot (ranges, names, combinations).
Every field carries a one-line doc (``metadata["help"]``) that ``mtrl-famo
train --help`` prints.

Step counts are environment steps summed over all tasks (one vector step of
MT10 is 10 environment steps), which is the x-axis of every log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

BENCHMARKS = ("mt1", "mt10", "mt50")
AGGREGATOR_NAMES = ("mean", "famo", "pcgrad", "cagrad",
                    "mgda", "imtlg", "alignedmtl", "upgrad", "dualproj", "fairgrad", "nashmtl",
                    "uw", "dwa", "rlw")
AGGREGATED_LOSSES = ("critic", "actor", "alpha")
#: ``aggregator.scale_mode`` of alignedmtl (``aggregators.alignedmtl.SCALE_MODES``).
ALIGNED_MTL_SCALE_MODES = ("min", "median", "rmse")
VECTOR_STRATEGIES = ("sync", "async")
COMPILE_MODES = ("none", "task_gradients", "all", "graph")
#: The aggregators whose update ``train.compile=graph`` captures as one graph (their
#: combine runs on the device with no host read; see ``graph_update``).
GRAPH_AGGREGATORS = ("mean", "famo", "uw", "rlw", "pcgrad", "cagrad", "imtlg", "alignedmtl")
PROTOCOLS = ("default", "metaworld_plus", "famo_paper", "cagrad_paper", "param_scaling")
#: ``agent.critic_loss_reduction``: how the twin critics' squared TD errors combine.
CRITIC_LOSS_REDUCTIONS = ("sum", "mean")
#: ``agent.alpha_loss_reduction`` and ``agent.alpha_loss_form`` (docs/protocols.md gives the formulas).
ALPHA_LOSS_REDUCTIONS = ("task_sum", "mean")
ALPHA_LOSS_FORMS = ("log_alpha", "alpha")
#: ``agent.task_loss_weights``: none, or Meta-World+'s ``use_task_weights`` (k softmax(-log_alpha)).
TASK_LOSS_WEIGHTS = ("none", "temperature")
#: ``benchmark.reward_normalization``: Meta-World 3's ``reward_normalization_method`` (null = off).
REWARD_NORMALIZATIONS = ("exponential", "gymnasium")
#: ``benchmark.reward_version``: Meta-World 3's ``reward_function_version``.
REWARD_VERSIONS = ("v1", "v2")
#: ``aggregator.order`` of pcgrad, ``aggregator.reduction`` of alignedmtl, ``aggregator.max_norm_mode``
#: of nashmtl, ``aggregator.scaling`` of famo (each aggregator module checks them too).
PCGRAD_ORDERS = ("per_task", "shared")
ALIGNED_MTL_REDUCTIONS = ("mean", "sum")
NASH_MTL_MAX_NORM_MODES = ("clip", "divide")
FAMO_SCALINGS = ("paper", "released")
#: ``agent.init`` and ``agent.log_std_mode`` values (``networks`` builds and checks them too).
INIT_SCHEMES = ("torch", "reference", "orthogonal", "xavier")
#: ``agent.network``: the actor's and critics' network (``networks.registry`` builds them).
NETWORK_NAMES = ("mlp", "film", "care", "moore", "soft_modules", "paco")
LOG_STD_MODES = ("tanh", "clip")
#: ``benchmark.backend``: the training envs' implementation (evaluation is always Meta-World's).
BACKENDS = ("metaworld", "envpool")
#: Highest ``benchmark.max_episode_steps``: Meta-World's ``max_path_length``; the env raises past it.
METAWORLD_MAX_EPISODE_STEPS = 500
#: Highest ``benchmark.num_goals``: Meta-World's ``_N_GOALS`` default, the goal variants its benchmarks draw.
METAWORLD_NUM_GOALS = 50
TASKS_PER_BENCHMARK = {"mt1": 1, "mt10": 10, "mt50": 50}
#: Longest run in environment steps summed over tasks: 100x the published MT50 protocol (2M steps per task,
#: Meta-World+ / Yu et al. 2020), decades of compute; a larger value is a typo.
MAX_TOTAL_STEPS = 10**10
#: Most gradient updates per vector-env step: far past any published update-to-data ratio (REDQ, Chen et al.
#: 2021: 20); more makes a run that never ends.
MAX_UPDATES_PER_STEP = 1000
#: Largest video frame side in pixels: a 4K frame (3840 x 2160) fits; MuJoCo's off-screen buffer grows to the
#: frame and EGL/OSMesa fail past the driver's renderbuffer limit (width=100000 gave an 85-line EGL traceback).
MAX_FRAME_SIDE = 4096
MAX_SEED = 2**31 - 1  # environments are reset with seed + step; NumPy and torch take it as an unsigned int


class ConfigError(ValueError):
    """A config value is not allowed; the message names the value and what is allowed."""


def doc(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a one-line help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class BenchmarkConfig:
    name: str = doc("mt10", "Meta-World benchmark: mt1 (one task), mt10 or mt50")
    env_name: Optional[str] = doc(None, "task for mt1, e.g. reach-v3 (ignored by mt10/mt50)")
    vector_strategy: str = doc("sync", "gymnasium vector env strategy: sync or async (one process per task)")
    max_episode_steps: int = doc(500, "episode length (time-limit truncation; see train.truncation_as_done)")
    task_onehot: bool = doc(True, "append the task one-hot to the observation (Meta-World's use_one_hot); false: "
                                  "no task id reaches the networks, as in the FAMO/CAGrad runs on mtrl")
    reward_normalization: Optional[str] = doc(None, "Meta-World's per-task reward_normalization_method: null (off), "
                                                    "exponential (running variance, rate 0.001: mtenv's "
                                                    "NormalizedEnvWrapper, which mtrl hard-codes) or gymnasium")
    reward_version: str = doc("v2", "Meta-World's reward_function_version: v2 (its default, the v3 tasks' own) or "
                                    "v1 (the original rewards; Meta-World+ examples/multi_task/*_v1.py)")
    num_goals: int = doc(50, "goal/object variants per task (Meta-World's num_goals): 50 (Meta-World default) or "
                             "1 (one fixed goal per task for the whole run, shared by the evaluation envs, as mtenv)")
    cagrad_c: float = doc(0.5, "this benchmark's default CAGrad c (0.9 on MT10, 0.5 on MT50)")
    backend: str = doc("metaworld", "training envs: metaworld (Meta-World's Python envs) or envpool (EnvPool's native "
                                    "C++ Meta-World v3, pip install mtrl-famo[envpool]; a new goal every episode, "
                                    "docs/envpool.md); evaluation always runs on Meta-World's envs")
    env_threads: int = doc(0, "backend=envpool: cores its env threads are pinned to (0: all cores but one, "
                              "left to the learner)")

    @property
    def label(self) -> str:
        """``mt10``, ``mt50``, or ``mt1-<env_name>``: how results and run folders name it."""
        return f"mt1-{self.env_name}" if self.name == "mt1" else self.name


@dataclass
class AggregatorConfig:
    """Options common to every aggregator; the per-aggregator schemas add theirs."""

    name: str = doc("mean", "how per-task losses are combined: mean, famo, pcgrad, cagrad, mgda, imtlg, "
                            "alignedmtl, upgrad, dualproj, fairgrad, nashmtl, uw, dwa or rlw")
    apply_to: List[str] = doc(["critic", "actor"], "which losses the aggregator combines, of critic, actor, alpha "
                                                   "(others use the mean; alpha: the temperature losses too, as "
                                                   "mtrl's gradient-manipulation agents)")


@dataclass
class MeanAggregatorConfig(AggregatorConfig):
    name: str = "mean"


@dataclass
class FamoAggregatorConfig(AggregatorConfig):
    name: str = "famo"
    apply_to: List[str] = doc(["critic"], "FAMO on the critic only, as in the FAMO paper's RL setup")
    w_lr: float = doc(0.025, "learning rate of FAMO's task logits")
    gamma: float = doc(0.001, "weight decay of FAMO's task logits")
    min_losses: float = doc(0.0, "lower bound of every task loss (FAMO works on loss - min_losses)")
    eps: float = doc(1e-8, "added to every loss so a loss at its minimum stays finite")
    scaling: str = doc("paper", "paper: weights (z/l) / sum(z/l) (Liu et al. 2023; Cranial-XIX/FAMO famo.py:32-33); "
                                "released: (z/l) * sum(z/l), as FAMO's released RL code (mtrl_files/famo.py:374-375)")


@dataclass
class PCGradAggregatorConfig(AggregatorConfig):
    name: str = "pcgrad"
    seed: int = doc(0, "seed of PCGrad's own projection-order generator (the YAML default: the run's seed)")
    order: str = doc("per_task", "per_task: an independent random order of the other tasks for each task (Yu et al. "
                                 "2020); shared: one random permutation of all tasks per call walked by every task, "
                                 "itself included (Meta-World+ optim/pcgrad.py:63-80 at b025cdb)")


@dataclass
class CAGradAggregatorConfig(AggregatorConfig):
    name: str = "cagrad"
    c: float = doc(0.5, "CAGrad's conflict-aversion radius (0 = mean)")


@dataclass
class UWAggregatorConfig(AggregatorConfig):
    name: str = "uw"
    apply_to: List[str] = doc(["critic"], "UW on the critic only: exp(-s) L + s has no minimum in s for a negative "
                                          "loss (the actor's); as FAMO's default")
    lr: float = doc(0.025, "Adam learning rate of UW's log-variances s (Nash-MTL's and FAMO's --method-params-lr "
                           "for uncertainty weighting)")


@dataclass
class DWAAggregatorConfig(AggregatorConfig):
    name: str = "dwa"
    apply_to: List[str] = doc(["critic"], "DWA on the critic only: a ratio of window means of the actor's losses "
                                          "(either sign) says nothing about progress")
    temperature: float = doc(2.0, "DWA's softmax temperature T (Liu et al. 2019: T = 2)")
    window: int = doc(500, "updates per window, DWA's stand-in for an epoch (ours: one 500-step episode of "
                           "updates; the YAML default is benchmark.max_episode_steps)")


@dataclass
class RLWAggregatorConfig(AggregatorConfig):
    name: str = "rlw"
    seed: int = doc(0, "seed of RLW's own weight stream, softmax of N(0, I) (Lin et al. 2022's default; "
                       "the YAML default: the run's seed)")


@dataclass
class MGDAAggregatorConfig(AggregatorConfig):
    name: str = "mgda"  # no options: the min-norm QP is solved exactly (Sener & Koltun 2018)


@dataclass
class IMTLGAggregatorConfig(AggregatorConfig):
    name: str = "imtlg"  # no options (Liu et al. 2021, IMTL-G)


@dataclass
class AlignedMTLAggregatorConfig(AggregatorConfig):
    name: str = "alignedmtl"
    scale_mode: str = doc("min", "Aligned-MTL's scale of the aligned gradients: min (Senushkin et al. 2023, "
                                 "Algorithm 1; the authors' default, SamsungLabs/MTL optim/aligned/balancer.py:10), "
                                 "median or rmse (solver.py:26-31)")
    reduction: str = doc("mean", "mean: the aligned gradients averaged (TorchJD); sum: summed over tasks, k times "
                                 "the mean (the authors' code, SamsungLabs/MTL optim/aligned/balancer.py:24)")


@dataclass
class UPGradAggregatorConfig(AggregatorConfig):
    name: str = "upgrad"
    norm_eps: float = doc(1e-4, "UPGrad/DualProj: Gram trace below which G counts as zero (TorchJD "
                                "QuadprogProjector's default)")
    reg_eps: float = doc(1e-4, "UPGrad/DualProj: ridge on the unit-trace Gram before quadprog (TorchJD "
                               "QuadprogProjector's default)")


@dataclass
class DualProjAggregatorConfig(UPGradAggregatorConfig):
    name: str = "dualproj"


@dataclass
class FairGradAggregatorConfig(AggregatorConfig):
    name: str = "fairgrad"
    alpha: float = doc(2.0, "FairGrad's fairness exponent alpha > 0 (2.0: the authors' MT10/MT50 runs, "
                            "OptMN-Lab/fairgrad mtrl_files/run.sh)")
    max_iters: int = doc(0, "FairGrad's least-squares evaluations; 0 = SciPy's default 100 k (TorchJD FairGrad)")


@dataclass
class NashMTLAggregatorConfig(AggregatorConfig):
    name: str = "nashmtl"
    update_weights_every: int = doc(1, "Nash-MTL: recompute the weights every N updates (authors' default 1, "
                                       "AvivNavon/nash-mtl experiments/utils.py)")
    optim_niter: int = doc(20, "Nash-MTL: convex problems per recomputation (authors' default 20)")
    max_norm: float = doc(1.0, "Nash-MTL: bound on the update's norm, 0 = off (authors' default 1.0, "
                               "methods/weight_methods.py)")
    max_norm_mode: str = doc("clip", "clip: rescale an update longer than max_norm to max_norm (AvivNavon/nash-mtl "
                                     "clip_grad_norm_); divide: divide it by max_norm, a no-op at 1.0 (FAMO's RL "
                                     "code, Cranial-XIX/FAMO mtrl_files/nashmtl.py:193-194)")


AGGREGATOR_SCHEMAS = {
    "mean": MeanAggregatorConfig,
    "famo": FamoAggregatorConfig,
    "pcgrad": PCGradAggregatorConfig,
    "cagrad": CAGradAggregatorConfig,
    "mgda": MGDAAggregatorConfig,
    "imtlg": IMTLGAggregatorConfig,
    "alignedmtl": AlignedMTLAggregatorConfig,
    "upgrad": UPGradAggregatorConfig,
    "dualproj": DualProjAggregatorConfig,
    "fairgrad": FairGradAggregatorConfig,
    "nashmtl": NashMTLAggregatorConfig,
    "uw": UWAggregatorConfig,
    "dwa": DWAAggregatorConfig,
    "rlw": RLWAggregatorConfig,
}

#: Aggregators that may not weight the actor loss (alpha log pi - Q, unbounded below: it turns
#: negative), with the reason; ``validate`` refuses ``apply_to`` with ``actor`` for them.
CRITIC_ONLY_AGGREGATORS = {
    "famo": "FAMO takes log(loss - min_losses) and the actor loss (alpha log pi - Q) has no lower bound "
            "(it turns negative, then NaN)",
    "uw": "UW minimises exp(-s) L + s, which for a negative loss (the actor's, alpha log pi - Q, turns negative) "
          "has no minimum: s -> -inf and the weight exp(-s) grows without bound",
    "dwa": "DWA divides window means of each loss, and the actor loss (alpha log pi - Q) changes sign, "
           "so the ratio says nothing about progress",
}


@dataclass
class AgentConfig:
    hidden_sizes: List[int] = doc([400, 400, 400], "hidden layer widths of actor and critic MLPs")
    actor_lr: float = doc(3e-4, "Adam learning rate of the actor")
    critic_lr: float = doc(3e-4, "Adam learning rate of the twin critic")
    alpha_lr: float = doc(3e-4, "Adam learning rate of the per-task temperatures")
    gamma: float = doc(0.99, "discount factor")
    tau: float = doc(0.005, "Polyak rate of the target critic")
    init_alpha: float = doc(1.0, "initial temperature of every task")
    target_entropy: Optional[float] = doc(None, "target policy entropy; default -|A|")
    log_std_min: float = doc(-5.0, "lower bound of the policy's log standard deviation")
    log_std_max: float = doc(2.0, "upper bound of the policy's log standard deviation")
    log_std_mode: str = doc("tanh", "how log std meets its bounds: tanh (smooth squash, CleanRL/mtrl) or "
                                    "clip (hard clamp, Meta-World+ reference)")
    multi_head: bool = doc(False, "one output layer per task on a shared trunk (Meta-World+ MTMHSAC)")
    init: str = doc("torch", "weight init: torch (PyTorch default), reference (He-uniform, small uniform "
                             "output layers; Meta-World+), orthogonal (pytorch_sac) or xavier (xavier_uniform, "
                             "zero biases; mtrl agent/utils.py:67-71)")
    adam_eps: float = doc(1e-8, "Adam epsilon of all three optimizers (Meta-World+ reference: 1e-5)")
    grad_clip: Optional[float] = doc(None, "clip each network's update (after the aggregator) to this global "
                                           "norm; null = off (Meta-World+ reference: 1.0)")
    shared_alpha: bool = doc(False, "one temperature for all tasks (mtrl/FAMO/CAGrad scripts) instead of one per task")
    max_q_value: Optional[float] = doc(None, "clip Q predictions and TD targets to [-max, max]; null = off "
                                             "(Meta-World+ b025cdb mtsac.py:105: 5000; none at its head 30c9991)")
    critic_loss_reduction: str = doc("sum", "twin critics' squared TD errors: sum (L1 + L2; mtrl sac.py:313-315) or "
                                            "mean ((L1 + L2) / 2; Meta-World+ mtsac.py:312)")
    alpha_loss_reduction: str = doc("task_sum", "temperature loss: task_sum (each task's row mean, the per-task "
                                                "losses summed) or mean (over all k*b rows, each log alpha gets 1/k; "
                                                "Meta-World+ mtsac.py:438, mtrl sac.py:417-420)")
    alpha_loss_form: str = doc("log_alpha", "log_alpha: -log_alpha * (log_pi + target_entropy) (Meta-World+ "
                                            "mtsac.py:438) or alpha: alpha * (-log_pi - target_entropy) "
                                            "(mtrl sac.py:417-420)")
    network: str = doc("mlp", "actor and critic network: mlp (shared, or agent.multi_head), film (FiLM), care (CARE), "
                              "moore (MOORE), soft_modules or paco (PaCo), as rainx0r/metaworld-algorithms@b025cdb "
                              "nn/{film,care,moore,soft_modules,paco}.py; all but mlp take the reference's init "
                              "(agent.init=reference); film/care/moore/paco take agent.hidden_sizes as their torso "
                              "(MOORE: its experts; PaCo: each layer's widths), soft_modules its own sizes")
    num_experts: Optional[int] = doc(None, "moore/care experts; null = the reference's per benchmark: MOORE 4 on MT10, "
                                           "6 on MT50 (b025cdb config/nn.py:152-154), CARE 6 and 10 (config/nn.py:127-129)")
    embedding_dim: Optional[int] = doc(None, "task/observation embedding width; null = the reference's: 50 for film/care "
                                             "(b025cdb config/nn.py:124,143), 400 for soft_modules (config/nn.py:97)")
    encoder_width: int = doc(50, "film/care context-encoder width (b025cdb config/nn.py:115,137)")
    encoder_depth: int = doc(2, "film/care context-encoder hidden layers (b025cdb config/nn.py:118,140)")
    encoder_temperature: float = doc(1.0, "care attention softmax temperature (b025cdb config/nn.py:121)")
    num_modules: Optional[int] = doc(None, "soft_modules modules per layer; null = the reference's: 2 on MT10, 4 on "
                                           "MT50 (b025cdb config/nn.py:93-95)")
    module_layers: Optional[int] = doc(None, "soft_modules layers of modules; null = the reference's: 2 on MT10, 4 on "
                                             "MT50 (b025cdb config/nn.py:89-91)")
    num_parameter_sets: Optional[int] = doc(None, "paco parameter sets per layer; null = the reference's: 5 on MT10 "
                                                  "(b025cdb config/nn.py:106), 20 on MT50 (examples/multi_task/"
                                                  "paco_mt10.py:39-50, an MT50 run despite its name)")
    module_width: int = doc(256, "soft_modules width of each module (b025cdb config/nn.py:86)")
    routing_width: int = doc(256, "soft_modules routing network width (b025cdb config/nn.py:83)")
    clip_actions: bool = doc(False, "clip sampled policy actions to +-(1 - float32 eps) before the env (Meta-World+ "
                                    "nn/distributions.py:20-27 at b025cdb)")
    task_loss_weights: str = doc("none", "none, or temperature: each task's critic and actor loss times "
                                         "k softmax(-log_alpha)_i, taken before the temperature step (Meta-World+ "
                                         "use_task_weights, rl/algorithms/mtsac.py:83-93,309-310,391-392,455-458 at "
                                         "b025cdb; Soft Modules' MT10 example)")


@dataclass
class TrainConfig:
    total_steps: Optional[int] = doc(None, "environment steps over all tasks; default steps_per_task x tasks")
    steps_per_task: int = doc(2_000_000, "environment steps per task when total_steps is not set")
    warmup_steps: Optional[int] = doc(None, "uniform-random-action steps before learning; default 4000 x tasks")
    updates_per_step: int = doc(1, "gradient updates per vector-env step")
    warmup_burst: bool = doc(False, "when warm-up ends, one update per warm-up vector step at once (then "
                                    "updates_per_step per step), as mtrl experiment/multitask.py:218-223")
    truncation_as_done: bool = doc(False, "store time-limit truncation as done (no bootstrap), as Meta-World+ "
                                          "b025cdb rl/algorithms/base.py:598; false bootstraps through it (its "
                                          "head 30c9991, mtrl)")
    shared_replay_indices: bool = doc(False, "one set of time indices per update shared by every task's partition "
                                             "(Meta-World+ rl/buffers.py:359-373); false: each task draws its own")
    per_task_batch: int = doc(128, "replay rows per task in one update (batch = per_task_batch x tasks)")
    buffer_size: int = doc(1_000_000, "replay capacity in transitions, split evenly over tasks")
    checkpoint_every: Optional[int] = doc(None, "steps between checkpoints; default eval.every")
    log_every: int = doc(5_000, "steps between loss/diagnostic scalars in TensorBoard")
    torch_threads: int = doc(0, "torch CPU threads; 0 = 1 thread on machines with <= 4 cores, else torch's default")
    progress: bool = doc(True, "show a progress bar with steps/s and ETA")
    compile: str = doc("none", "torch.compile: none, task_gradients (the gradient aggregators' one-pass per-task gradients), "
                              "all (kept for old configs: the same as task_gradients) or graph (the whole update as "
                              "one graph, CUDA graphs on CUDA); see docs/performance.md")

    def total_for(self, num_tasks: int) -> int:
        """The run length in environment steps: ``total_steps``, else ``steps_per_task x num_tasks``."""
        return self.total_steps if self.total_steps is not None else self.steps_per_task * num_tasks

    def warmup_for(self, num_tasks: int) -> int:
        """The random-action warm-up in environment steps: ``warmup_steps``, else ``4000 x num_tasks``."""
        return self.warmup_steps if self.warmup_steps is not None else 4000 * num_tasks


@dataclass
class EvalConfig:
    every: int = doc(200_000, "steps between evaluations during training")
    episodes: int = doc(10, "evaluation episodes per task during training (and for `mtrl-famo eval`, default 50)")
    final_episodes: int = doc(50, "evaluation episodes per task at the end of training")


@dataclass
class VideoConfig:
    every: Optional[int] = doc(None, "steps between policy videos in run_dir/videos during training; null = off")
    tasks: Optional[List[str]] = doc(None, "tasks to film, e.g. [reach-v3,push-v3]; null = every task")
    episodes: int = doc(1, "episodes per task in each video")
    camera: str = doc("corner", "Meta-World camera: corner, corner2, corner3, corner4, topview, behindGripper, "
                                "gripperPOV")
    width: int = doc(480, "video frame width in pixels")
    height: int = doc(480, "video frame height in pixels")


@dataclass
class ProtocolConfig:
    """Which published setup a run follows; set by ``protocol=NAME`` (``docs/protocols.md``)."""

    name: str = doc("default", "the protocol preset the run started from: default, metaworld_plus, famo_paper, "
                               "cagrad_paper, param_scaling (reports never pool different protocols)")
    famo_gamma: float = doc(0.001, "FAMO's logit weight decay under this protocol (aggregator.gamma's default)")
    famo_scaling: str = doc("paper", "FAMO's weight scaling under this protocol (aggregator.scaling's default)")
    pcgrad_order: str = doc("per_task", "PCGrad's projection order under this protocol (aggregator.order's default)")
    gradient_apply_to: List[str] = doc(["critic", "actor"], "the losses the gradient-family aggregators combine "
                                                            "under this protocol (their aggregator.apply_to default)")


@dataclass
class Config:
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    seed: int = doc(0, "seed of environments, networks and replay sampling")
    seeds: Optional[List[int]] = doc(None, "a population: one member per seed, all trained in one process, each in "
                                           "run_dir/s<seed> (e.g. seeds=[0,1,2]); null = one run with `seed`")
    device: str = doc("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    run_dir: Optional[str] = doc(None, "output folder; an existing run there is resumed. Default runs/<benchmark>-<aggregator>-s<seed>")


def register_schemas() -> None:
    """Register the schemas so YAML files can extend them (``defaults: [_schema]``)."""
    cs = ConfigStore.instance()
    cs.store(name="_config_schema", node=Config)
    cs.store(group="benchmark", name="_schema", node=BenchmarkConfig)
    cs.store(group="agent", name="_schema", node=AgentConfig)
    for name, schema in AGGREGATOR_SCHEMAS.items():
        cs.store(group="aggregator", name=f"_{name}_schema", node=schema)
    # Protocol presets state per-task numbers as the papers do ("1500 warm-up steps per task",
    # "batch 1280"); these turn them into our totals for the chosen benchmark.
    OmegaConf.register_new_resolver("times_tasks", lambda n, benchmark: int(n) * TASKS_PER_BENCHMARK[benchmark],
                                    replace=True)
    OmegaConf.register_new_resolver("per_task", lambda n, benchmark: max(1, int(n) // TASKS_PER_BENCHMARK[benchmark]),
                                    replace=True)


def aggregator_options(cfg: AggregatorConfig) -> dict:
    """The aggregator's own options (everything but ``name`` and ``apply_to``)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("name", "apply_to")}
