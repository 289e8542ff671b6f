"""A WGAN with weight clipping on Fashion-MNIST: AdaBelief's WGAN experiment (Zhuang et al. 2020, Fig. 6) at a
scale a GPU runs in minutes.

The paper: CIFAR-10, a DCGAN-style generator and critic, batch 64, 5 critic steps per generator step, the
critic's weights clipped to [-0.01, 0.01] after every critic step (Arjovsky et al. 2017), β1 = 0.5, lr 2e-4,
100 epochs, FID on 64,000 samples, 5 runs per optimizer. Here: Fashion-MNIST (offline), the DCGAN-style
generator and critic of :mod:`.gan` (two transposed convolutions / two strided convolutions, batch norm in both,
as in the WGAN paper's DCGAN critic), the same losses, clipping, critic steps, batch and β1 (β2 = 0.999, the
paper's AdaBelief setting), and a budget in generator steps set by the suite (10,000 generator steps = 50,000
critic batches, about 53 epochs of the 60,000 images).

**The metric, and its limits.** ``fd``: the Fréchet distance between Gaussians fitted to 2,000 samples and to
the 10,000 test images in the 128-d penultimate-layer features of a small Fashion-MNIST CNN classifier (trained
once with adamkit's Adam, cached, :func:`.gan.feature_classifier`): an FID computed in another network's
features. It is *not* FID and not comparable with the paper's numbers or with FIDs elsewhere: it depends on that
classifier, and with 2,000 samples it is biased upwards (by the same amount for every optimizer at the same
sample size, so differences between optimizers are what it measures). Like FID it sees sample quality and mode
coverage only as far as the classifier's features do. Reported beside it: ``classes_covered`` and
``class_entropy`` (the classifier's labels of the samples: mode coverage over the 10 classes), and ``d_loss``, the
last critic loss, E[D(fake)] - E[D(real)], whose negative is the clipped critic's estimate of the Wasserstein
distance up to the critic's Lipschitz constant (set by the clipping, so comparable between runs of this task,
not across tasks; its scale also follows the critic's training, so it is reported, never selected on).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import register
from .gan import _FashionGAN


@register
class WGANClipFashion(_FashionGAN):
    name = "wgan_clip_fmnist"
    description = ("WGAN with weight clipping (critic weights in [-0.01, 0.01], 5 critic steps per generator step, "
                   "batch norm) on Fashion-MNIST; Fréchet distance in classifier features")
    stands_for = "AdaBelief's WGAN experiment (CIFAR-10, weight clipping 0.01, FID over 5 runs)"
    experiment = "stand-in"  # AdaBelief's WGAN with weight clipping, but on other data and scored by a proxy Fréchet distance
    defaults = {**_FashionGAN.defaults, "n_critic": 5, "clip_value": 0.01}
    default_steps = 10_000
    batchnorm = True
    betas = (0.5, 0.999)
    cost = ("1.5 s per generator step (5 critic steps) on one CPU thread at load 3.5, 3x dcgan_fmnist; not measured "
            "on a GPU yet")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        value = self.cfg["clip_value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"clip_value must be a number > 0, got {value!r}")
        if isinstance(self.n_critic, bool) or not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ValueError(f"n_critic must be an integer >= 1, got {self.n_critic!r}")

    @staticmethod
    def d_loss(D, real, fake):
        """The critic's loss E[D(fake)] - E[D(real)] (it maximises the difference)."""
        return D(fake).mean() - D(real).mean()

    @staticmethod
    def g_loss(scores):
        return -scores.mean()

    @torch.no_grad()
    def after_critic_step(self, D: nn.Module) -> None:
        """Clip every critic parameter to [-clip_value, clip_value] (Arjovsky et al. 2017, Algorithm 1)."""
        for p in D.parameters():
            p.clamp_(-self.clip_value, self.clip_value)
