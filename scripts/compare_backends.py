"""Fidelity of benchmark.backend=envpool: Meta-World's Python envs and EnvPool's native ones, task by task.

Both backends run the training envs the loop gets (``make_envs`` of MT1 for each task, and EnvPool's
``EnvPoolTasks``), for ``--episodes`` full episodes each, under two policies:

- ``random``: the same uniform random action sequence on both backends;
- ``scripted``: Meta-World's own scripted expert of the task (``metaworld.policies``), on each backend's
  observations (so the action sequences follow each backend's states).

Per task and policy it prints (and writes with ``--json``) each backend's mean episodic return, success
rate (success at any step of the episode, as Meta-World's evaluation counts it), and the largest gap
between the two backends' per-dimension observation means over all steps, in units of the two backends'
pooled standard deviation (and which of the 39 dimensions it is).
The two backends draw their goals differently (Meta-World: one of 50 fixed variations per task at each
reset; EnvPool: a fresh draw from the task's whole range), so they are compared as distributions.

Step for step: EnvPool 1.2.5 exposes no way to set an env's state or goal (its reset-state info is
compiled in only with ``ENVPOOL_TEST``), so the reverse is done, as EnvPool's own alignment test does
(``envpool/mujoco/metaworld/metaworld_align_test.py``): a Meta-World env is put into EnvPool's episode
start, its random vector fitted (``scipy.optimize.least_squares``) until Meta-World's reset observation is
EnvPool's, and both step the same actions: random ones, and (every second episode) those of Meta-World's
scripted expert on Meta-World's observations. ``--step-episodes`` such episodes per task; the largest
observation and reward differences over the first 100 steps and the whole episode are reported
(``fit``: the reset observations' largest difference after the fit), the steps whose success flags
differ, and which backends' episode succeeded.

    python scripts/compare_backends.py --benchmark mt50 --episodes 10 --json runs/compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np

from mtrl_famo.config import BenchmarkConfig
from mtrl_famo.envpool_envs import EnvPoolTasks
from mtrl_famo.envs import benchmark_task_names, make_envs

warnings.filterwarnings("ignore")


def run_episodes(envs, episodes: int, steps: int, policy: str, task: str, rng_seed: int) -> dict:
    """``episodes`` episodes of ``steps`` steps; per episode return and success, per step the observation."""
    from metaworld.policies import ENV_POLICY_MAP

    expert = ENV_POLICY_MAP[task]() if policy == "scripted" else None
    actions = np.random.default_rng(rng_seed).uniform(-1, 1, (episodes, steps, 1, 4)).astype(np.float32)
    obs, _ = envs.reset(seed=rng_seed)
    returns, success, observations = np.zeros(episodes), np.zeros(episodes, dtype=bool), []
    for e in range(episodes):
        for t in range(steps):
            observations.append(obs[0, :39].astype(np.float64))
            a = actions[e, t] if expert is None else np.clip(expert.get_action(obs[0, :39]), -1, 1)[None]
            obs, reward, _, truncated, infos = envs.step(a.astype(np.float32))
            returns[e] += reward[0]
            info = infos["final_info"] if truncated[0] else infos
            success[e] |= bool(info["success"][0] > 0)
        assert truncated[0], "episodes end at the time limit"
    return {"returns": returns, "success": success, "obs": np.stack(observations)}


def fit_metaworld_to(task: str, target: np.ndarray):
    """A Meta-World env of ``task`` reset into the episode whose first observation is ``target`` ``[39]``.

    :return: the env (ready to step) and the largest difference of its reset observation from ``target``.
    """
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from scipy.optimize import least_squares

    env = ALL_V3_ENVIRONMENTS[task]()
    env._set_task_called, env._partially_observable, env._freeze_rand_vec = True, False, True
    del env.sawyer_observation_space
    space = env._random_reset_space

    draws = [0]

    def frozen_vec():  # Meta-World's draw of a frozen vector, counted: some resets redraw until a condition holds
        draws[0] += 1
        if draws[0] > 20:
            raise RuntimeError("the reset redraws this vector for ever")
        return env._last_rand_vec

    env._get_state_rand_vec = frozen_vec

    def reset_obs(vec):
        env._last_rand_vec, draws[0] = np.asarray(vec, dtype=np.float64), 0
        return env.reset()[0]

    # Most tasks place the object and the goal straight from the random vector: start from the observation's,
    # then from it with random coordinates past the first three (a start the reset accepts).
    rng = np.random.default_rng(0)
    base = np.clip(np.concatenate([target[4:7], target[36:39]])[: space.low.size], space.low, space.high)
    for attempt in range(50):
        guess = base if attempt == 0 else np.concatenate([base[:3], rng.uniform(space.low, space.high)[3:]])
        if attempt >= 25:
            guess = rng.uniform(space.low, space.high)
        try:
            reset_obs(guess)
            break
        except RuntimeError:
            continue
    def residual(v):
        try:
            return reset_obs(v) - target
        except RuntimeError:
            return np.full(target.shape, 1e3)

    fit = least_squares(residual, guess, bounds=(space.low, space.high + 1e-12),
                        diff_step=1e-7, xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=200)
    gap = float(np.abs(reset_obs(fit.x) - target).max())
    return env, gap


def step_for_step(task: str, seed: int, steps: int, episodes: int) -> list[dict]:
    """EnvPool's episodes replayed on Meta-World from the same start with the same actions: random ones, then
    (odd episodes) those Meta-World's scripted expert takes on Meta-World's observations; EnvPool's
    observations clipped as the training envs clip them (:class:`EnvPoolTasks`)."""
    from metaworld.policies import ENV_POLICY_MAP

    import envpool
    from envpool.mujoco.metaworld.registration import metaworld_task_id

    from mtrl_famo.envpool_envs import _metaworld_bounds

    _, low, high = _metaworld_bounds(task)
    pool = envpool.make_gymnasium(metaworld_task_id(task), num_envs=1, seed=seed, max_episode_steps=steps,
                                  partially_observable=False)
    out = []
    try:
        for e in range(episodes):
            obs, _ = pool.reset()
            env, gap = fit_metaworld_to(task, np.clip(obs[0], low, high))
            actions = np.random.default_rng(seed + e).uniform(-1, 1, (steps, 4)).astype(np.float32)
            expert = ENV_POLICY_MAP[task]() if e % 2 else None
            mw_obs = env._last_stable_obs if expert is None else env.reset()[0]
            obs_gap, reward_gap, success_differs, successes = [], [], 0, [False, False]
            for t in range(steps):
                action = actions[t] if expert is None else np.clip(expert.get_action(mw_obs), -1, 1).astype(np.float32)
                mw_obs, mw_reward, _, _, mw_info = env.step(action)
                obs, _, _, _, info = pool.step(action[None])
                successes[0] |= bool(mw_info["success"] > 0)
                successes[1] |= bool(info["success"][0] > 0)
                obs_gap.append(float(np.abs(np.clip(obs[0], low, high) - mw_obs).max()))
                reward_gap.append(abs(float(info["unscaled_reward"][0]) - float(mw_reward)))
                success_differs += int((info["success"][0] > 0) != (mw_info["success"] > 0))
            env.close()
            first_over = next((t for t, g in enumerate(obs_gap) if g > 1e-6), steps)
            out.append({"policy": "scripted" if expert else "random", "success": successes,
                        "fit": gap, "obs": max(obs_gap), "reward": max(reward_gap),
                        "obs_100": max(obs_gap[:100]), "reward_100": max(reward_gap[:100]),
                        "first_step_over_1e-6": first_over, "success_steps_differ": success_differs})
    finally:
        pool.close()
    return out


def compare_task(task: str, episodes: int, steps: int, seed: int, step_episodes: int) -> dict:
    row = {"task": task}
    for policy in ("random", "scripted"):
        results = {}
        for backend in ("metaworld", "envpool"):
            envs = (make_envs(BenchmarkConfig(name="mt1", env_name=task, max_episode_steps=steps), seed)
                    if backend == "metaworld" else EnvPoolTasks([task], seed, steps, env_threads=1))
            try:
                results[backend] = run_episodes(envs, episodes, steps, policy, task, seed)
            finally:
                envs.close()
        mw, ep = results["metaworld"], results["envpool"]
        pooled = np.sqrt((mw["obs"].var(0) + ep["obs"].var(0)) / 2)  # [39]
        moving = pooled > 1e-6  # the padding of a second object, and fixed coordinates, never move
        gaps = np.abs(mw["obs"].mean(0) - ep["obs"].mean(0))[moving] / pooled[moving]
        row[policy] = {
            "return": [float(mw["returns"].mean()), float(ep["returns"].mean())],
            "return_std": [float(mw["returns"].std()), float(ep["returns"].std())],
            "success": [float(mw["success"].mean()), float(ep["success"].mean())],
            "obs_mean_gap_in_std": float(gaps.max()) if gaps.size else 0.0,
            "obs_mean_gap_dim": int(np.flatnonzero(moving)[gaps.argmax()]) if gaps.size else -1,
        }
    if step_episodes:
        row["step_for_step"] = step_for_step(task, seed, steps, step_episodes)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="mt10", choices=["mt10", "mt50"])
    parser.add_argument("--tasks", nargs="*", help="these tasks only (default: the benchmark's)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task, backend and policy")
    parser.add_argument("--steps", type=int, default=500, help="episode length")
    parser.add_argument("--step-episodes", type=int, default=2, help="step-for-step episodes per task (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args(argv)
    tasks = args.tasks or benchmark_task_names(BenchmarkConfig(name=args.benchmark))
    rows = []
    print("| task | policy | return MW | return EP | success MW | success EP | obs mean gap (std) |"
          + (" step for step: fit / obs diff (100 steps, all) / reward diff (100, all) / steps whose success "
             "differs / succeeded |" if args.step_episodes else ""))
    print("|---|---|---:|---:|---:|---:|---:|" + ("---|" if args.step_episodes else ""))
    clock = time.perf_counter()
    for task in tasks:
        row = compare_task(task, args.episodes, args.steps, args.seed, args.step_episodes)
        rows.append(row)
        for policy in ("random", "scripted"):
            r = row[policy]
            sfs = ""
            s = [x for x in row.get("step_for_step", []) if x["policy"] == policy]
            if s:
                sfs = (f" {max(x['fit'] for x in s):.0e} / {max(x['obs_100'] for x in s):.0e}, "
                       f"{max(x['obs'] for x in s):.0e} / {max(x['reward_100'] for x in s):.0e}, "
                       f"{max(x['reward'] for x in s):.0e} / {sum(x['success_steps_differ'] for x in s)} / "
                       f"{''.join('MW' * x['success'][0] + 'EP' * x['success'][1] or '-' for x in s)} |")
            elif args.step_episodes:
                sfs = " |"
            print(f"| {task} | {policy} | {r['return'][0]:.0f} ± {r['return_std'][0]:.0f} | {r['return'][1]:.0f} ± "
                  f"{r['return_std'][1]:.0f} | {r['success'][0]:.2f} | {r['success'][1]:.2f} | "
                  f"{r['obs_mean_gap_in_std']:.2f} (dim {r['obs_mean_gap_dim']}) |{sfs}", flush=True)
    print(f"{len(tasks)} tasks in {time.perf_counter() - clock:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
