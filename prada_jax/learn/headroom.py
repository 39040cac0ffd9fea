"""How much of the PRM teacher's gain a Stage-1 policy can reach from its features (docs/learning.md, "Headroom").

The MDP's rewards depend only on (problem, step, action), so a policy's return over All-SLM is the sum of the
offload advantage r(x, 1) - r(x, 0) over the steps it offloads. The PRM optimum offloads exactly where that
advantage is positive, but it sees the PRM's noise; a policy that sees only the features can do no better than
offloading where the advantage's *conditional mean* given the features is positive. `ridge_actions` estimates that
rule with a ridge regression on the features and their squares (no cross terms), fitted on the training problems: a simple supervised yardstick for what
PPO's pi_theta should reach on held-out problems.
"""

from __future__ import annotations

import numpy as np

from prada_jax.learn import mdp as M
from prada_jax.sim.metrics import t_half_width

RIDGE_PENALTY = 1e-2  # on standardised features; the fits below have thousands of steps, so it barely matters


def offload_advantage(mdp: M.StepMDP, beta: float) -> np.ndarray:
    """float64 [N, K]: r(x, 1) - r(x, 0) of eq. 21 (0 on padding)."""
    r = np.asarray(M.reward_table(mdp, beta), np.float64)
    return np.where(np.asarray(mdp.step_mask), r[..., 1] - r[..., 0], 0.0)


def return_over_all_slm(advantage, actions, step_mask) -> np.ndarray:
    """float64 [N]: each problem's return minus All-SLM's, for actions [N, K] (1 = LLM; padding ignored)."""
    offload = np.asarray(actions).astype(bool) & np.asarray(step_mask, bool)
    return np.where(offload, np.asarray(advantage, np.float64), 0.0).sum(axis=1)


def _quadratic(x):
    return np.concatenate([np.ones((x.shape[0], 1)), x, x * x], axis=1)


def ridge_actions(mdp: M.StepMDP, advantage, train) -> np.ndarray:
    """int32 [N, K]: offload where a ridge fit of the advantage on the features and their squares (training
    problems' real steps only) predicts a positive value."""
    mask = np.asarray(mdp.step_mask, bool)
    obs = np.asarray(mdp.obs, np.float64)
    fit_on = mask & np.asarray(train, bool)[:, None]
    design = _quadratic(obs[fit_on])
    gram = design.T @ design + RIDGE_PENALTY * np.eye(design.shape[1])
    coef = np.linalg.solve(gram, design.T @ np.asarray(advantage, np.float64)[fit_on])
    predicted = _quadratic(obs.reshape(-1, obs.shape[-1])) @ coef
    return (mask & (predicted.reshape(mask.shape) > 0.0)).astype(np.int32)


def _mean_ci(values) -> tuple[float, float]:
    """Mean and Student-t 95 % half-width (NaN for fewer than 2 values)."""
    n = values.size
    return float(values.mean()), float(t_half_width(values.std(ddof=1), n)) if n > 1 else float("nan")


def summarize_policy(advantage, actions, step_mask, problems, baseline_actions=None) -> dict:
    """Over the selected problems (bool [N]): offload fraction and mean return over All-SLM per problem, with a
    Student-t 95 % half-width; with `baseline_actions`, also the paired per-problem difference to that policy."""
    problems = np.asarray(problems, bool)
    adv, mask = np.asarray(advantage)[problems], np.asarray(step_mask, bool)[problems]
    actions = np.asarray(actions)[problems]
    per_problem = return_over_all_slm(adv, actions, mask)
    mean, half = _mean_ci(per_problem)
    out = {"offload_fraction": float(actions[mask].mean()), "return_over_all_slm": mean, "ci95": half,
           "num_problems": int(per_problem.size)}
    if baseline_actions is not None:
        diff = per_problem - return_over_all_slm(adv, np.asarray(baseline_actions)[problems], mask)
        out["minus_baseline"], out["minus_baseline_ci95"] = _mean_ci(diff)
    return out
