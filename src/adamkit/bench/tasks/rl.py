"""Reinforcement learning: a small PPO agent (clipped surrogate, GAE, separate actor and critic
MLPs of 64-64) on gymnasium's CartPole-v1 (discrete) and Pendulum-v1 (continuous, Gaussian policy), and
on the MuJoCo locomotion tasks HalfCheetah-v5 and Hopper-v5 (ADOPT's PPO experiment; they need the
``mujoco`` wheel, in the ``tasks`` extra), with observations normalised by running statistics.

One ``train_step`` is one optimizer step on one mini-batch; a fresh rollout is collected whenever
the previous one has been used for ``ppo_epochs`` epochs. Metrics: ``train_return`` (mean return of
the last 10 finished training episodes) and ``eval_return`` (deterministic policy, fresh seeds)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..problem import Instance
from ..registry import register
from ._common import Task, as_float, seeded


def _mlp(n_in: int, n_out: int, out_gain: float) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(n_in, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, n_out))
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=np.sqrt(2))
            nn.init.zeros_(layer.bias)
    nn.init.orthogonal_(net[-1].weight, gain=out_gain)
    return net


class PPOInstance(Instance):
    def __init__(self, task: "_PPOTask", seed: int):
        import gymnasium as gym

        self.gen = seeded(seed)
        self.task, self.seed = task, int(seed)
        self.env = gym.make(task.env_id)
        self.eval_env = gym.make(task.env_id)
        self.obs, _ = self.env.reset(seed=self.seed)
        self.env.action_space.seed(self.seed)
        n_obs = self.env.observation_space.shape[0]
        self.discrete = hasattr(self.env.action_space, "n")
        n_act = self.env.action_space.n if self.discrete else self.env.action_space.shape[0]
        self.actor = _mlp(n_obs, n_act, 0.01)
        self.critic = _mlp(n_obs, 1, 1.0)
        self.log_std = nn.Parameter(torch.full((n_act,), -0.5)) if not self.discrete else None
        if not self.discrete:
            self.low = torch.as_tensor(self.env.action_space.low)
            self.high = torch.as_tensor(self.env.action_space.high)
        self.default_steps = task.steps
        per_rollout = task.ppo_epochs * (task.rollout // task.minibatch)
        self.steps_per_epoch = per_rollout
        self.buffer = None
        self._order: list[torch.Tensor] = []
        self.returns: list[float] = []
        self._episode_return = 0.0
        self.env_steps = 0
        # running mean and variance of the observations (Welford; only when the task normalises them)
        self.normalize = bool(task.cfg.get("normalize_obs", False))
        self._obs_n, self._obs_mean, self._obs_m2 = 0, np.zeros(n_obs), np.zeros(n_obs)

    def _obs(self, obs, update: bool = False) -> torch.Tensor:
        """The observation as the networks see it: standardised by the running statistics when the task
        normalises observations (updated only while collecting rollouts), clipped to +-10."""
        obs = np.asarray(obs, dtype=np.float64)
        if not self.normalize:
            return torch.as_tensor(obs, dtype=torch.float32)
        if update:
            self._obs_n += 1
            delta = obs - self._obs_mean
            self._obs_mean += delta / self._obs_n
            self._obs_m2 += delta * (obs - self._obs_mean)
        std = np.sqrt(self._obs_m2 / max(1, self._obs_n - 1)) + 1e-8 if self._obs_n > 1 else 1.0
        return torch.as_tensor(np.clip((obs - self._obs_mean) / std, -10, 10), dtype=torch.float32)

    def parameters(self):
        params = [*self.actor.parameters(), *self.critic.parameters()]
        return params + ([self.log_std] if self.log_std is not None else [])

    def _dist(self, obs):
        out = self.actor(obs)
        if self.discrete:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Normal(out, self.log_std.exp())

    @torch.no_grad()
    def _collect(self):
        t = self.task
        obs_l, act_l, logp_l, rew_l, done_l, val_l, term_l = [], [], [], [], [], [], []
        for _ in range(t.rollout):
            obs = self._obs(self.obs, update=True)
            dist = self._dist(obs)
            action = dist.sample()
            logp = dist.log_prob(action)
            if not self.discrete:
                logp = logp.sum()
                env_action = torch.clamp(action, self.low, self.high).numpy()
            else:
                env_action = int(action)
            nxt, reward, terminated, truncated, _ = self.env.step(env_action)
            self.env_steps += 1
            self._episode_return += float(reward)
            obs_l.append(obs); act_l.append(action); logp_l.append(logp)
            rew_l.append(float(reward) * t.reward_scale); val_l.append(float(self.critic(obs)))
            done = terminated or truncated
            done_l.append(done); term_l.append(terminated)
            if done:
                self.returns = (self.returns + [self._episode_return])[-10:]
                self._episode_return = 0.0
                nxt, _ = self.env.reset()
            self.obs = nxt
        # generalised advantage estimation; a truncated episode bootstraps from its last value
        last_value = float(self.critic(self._obs(self.obs)))
        adv = np.zeros(t.rollout, np.float32)
        gae = 0.0
        for i in reversed(range(t.rollout)):
            next_value = last_value if i == t.rollout - 1 else val_l[i + 1]
            if done_l[i]:
                next_value = 0.0 if term_l[i] else val_l[i]
                gae = 0.0
            delta = rew_l[i] + t.gamma * next_value - val_l[i]
            gae = delta + t.gamma * t.lam * gae
            adv[i] = gae
        adv_t = torch.as_tensor(adv)
        self.buffer = {"obs": torch.stack(obs_l), "act": torch.stack(act_l), "logp": torch.stack(logp_l),
                       "adv": adv_t, "ret": adv_t + torch.as_tensor(val_l, dtype=torch.float32)}
        self._order = []
        for _ in range(t.ppo_epochs):
            self._order += list(torch.randperm(t.rollout, generator=self.gen).split(t.minibatch))
        self._order = [i for i in self._order if len(i) == t.minibatch]

    def train_step(self, optimizer, step):
        if not self._order:
            self._collect()
        idx = self._order.pop(0)
        b = {k: v[idx] for k, v in self.buffer.items()}
        adv = (b["adv"] - b["adv"].mean()) / (b["adv"].std() + 1e-8)
        t = self.task

        def closure():
            optimizer.zero_grad()
            dist = self._dist(b["obs"])
            logp = dist.log_prob(b["act"])
            entropy = dist.entropy()
            if not self.discrete:
                logp, entropy = logp.sum(-1), entropy.sum(-1)
            ratio = (logp - b["logp"]).exp()
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - t.clip_ratio, 1 + t.clip_ratio) * adv)
            value_loss = (self.critic(b["obs"]).squeeze(-1) - b["ret"]).pow(2).mean()
            loss = -surrogate.mean() + 0.5 * value_loss - t.entropy_coef * entropy.mean()
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 0.5)
            return loss

        return as_float(optimizer.step(closure))

    @torch.no_grad()
    def evaluate(self):
        total = 0.0
        for episode in range(self.task.eval_episodes):
            obs, _ = self.eval_env.reset(seed=10_000 + 1000 * self.seed + episode)
            done = False
            while not done:
                out = self.actor(self._obs(obs))
                action = int(out.argmax()) if self.discrete else torch.clamp(out, self.low, self.high).numpy()
                obs, reward, terminated, truncated, _ = self.eval_env.step(action)
                total += float(reward)
                done = terminated or truncated
        out = {"eval_return": total / max(1, self.task.eval_episodes), "env_steps": float(self.env_steps)}
        if self.returns:
            out["train_return"] = float(np.mean(self.returns))
        return out


class _PPOTask(Task):
    experiment = "stand-in"  # classic-control PPO, not the papers' MuJoCo runs
    selection_metric = "eval_return"
    maximize_metric = True
    target_metric = "eval_return"
    stands_for = "reinforcement learning (the papers' policy-gradient experiments)"
    lr_range = (1e-5, 1e-2)
    env_id: ClassVar[str]

    def make(self, seed):
        return PPOInstance(self, seed)


@register
class CartPolePPO(_PPOTask):
    name = "cartpole_ppo"
    env_id = "CartPole-v1"
    description = "gymnasium CartPole-v1, PPO (actor/critic MLP 64-64), 1024-step rollouts"
    defaults = {"rollout": 1024, "minibatch": 256, "ppo_epochs": 4, "gamma": 0.99, "lam": 0.95,
                "clip_ratio": 0.2, "entropy_coef": 0.01, "reward_scale": 1.0, "eval_episodes": 3}
    default_steps = 16 * 50  # 50 rollouts = 51,200 environment steps
    target = 475.0
    cost = "1,000 optimizer steps (16 rollouts) about 15 s (README)"


@register
class PendulumPPO(_PPOTask):
    name = "pendulum_ppo"
    env_id = "Pendulum-v1"
    description = "gymnasium Pendulum-v1, PPO with a Gaussian policy, 2048-step rollouts"
    defaults = {"rollout": 2048, "minibatch": 256, "ppo_epochs": 10, "gamma": 0.95, "lam": 0.95,
                "clip_ratio": 0.2, "entropy_coef": 0.0, "reward_scale": 0.1, "eval_episodes": 3}
    default_steps = 80 * 100  # 100 rollouts = 204,800 environment steps
    target = -300.0


class _MuJoCoPPO(_PPOTask):
    """PPO on a MuJoCo locomotion task with the usual settings for it (Schulman et al. 2017; the CleanRL and
    Stable-Baselines3 defaults): 2048-step rollouts, 10 epochs of mini-batches of 64, gamma 0.99, GAE 0.95,
    observation normalisation. One ``train_step`` is one optimizer step, so 320 steps are one rollout."""
    experiment = "paper"  # PPO on MuJoCo locomotion, ADOPT's experiment

    stands_for = "deep RL on MuJoCo locomotion (ADOPT's PPO HalfCheetah/Ant experiment)"
    defaults = {"rollout": 2048, "minibatch": 64, "ppo_epochs": 10, "gamma": 0.99, "lam": 0.95,
                "clip_ratio": 0.2, "entropy_coef": 0.0, "reward_scale": 0.1, "eval_episodes": 2,
                "normalize_obs": True}
    default_steps = 320 * 50  # 50 rollouts = 102,400 environment steps

    def make(self, seed):
        try:
            import mujoco  # noqa: F401
        except ImportError:
            raise RuntimeError(f"task {self.name!r} needs the mujoco wheel: pip install 'adamkit[tasks]' "
                               "(or pip install 'mujoco>=3.1,<4' imageio)") from None
        return super().make(seed)


@register
class HalfCheetahPPO(_MuJoCoPPO):
    name = "halfcheetah_ppo"
    env_id = "HalfCheetah-v5"
    cost = ("3.5 s per rollout (2,048 environment steps + 320 optimizer steps) at load 3, 15.3 s at load 6; an "
            "evaluation (2 episodes of 1,000 steps) 1-2.6 s")
    description = "gymnasium MuJoCo HalfCheetah-v5, PPO (Gaussian policy, MLP 64-64, obs normalisation), 2048-step rollouts"


@register
class HopperPPO(_MuJoCoPPO):
    name = "hopper_ppo"
    env_id = "Hopper-v5"
    cost = "12.5 s per rollout (2,048 environment steps + 320 optimizer steps) at load 6; an evaluation about 1 s"
    description = "gymnasium MuJoCo Hopper-v5, PPO (Gaussian policy, MLP 64-64, obs normalisation), 2048-step rollouts"
