"""A variational autoencoder on Fashion-MNIST (ADOPT's generative-model claim, at CPU scale; DeepOBS's
``fmnist_vae`` is the reference point): MLP encoder 784-512-256 to a 20-d Gaussian posterior, MLP decoder
20-256-512-784 with a Bernoulli likelihood on the pixel intensities in [0, 1] (Kingma & Welling 2014).

Metric: the negative ELBO in nats per image, -E_q[log p(x|z)] + KL(q(z|x) || N(0, I)), on held-out images:
``val_neg_elbo`` (10% of the training set, for selection) and ``test_neg_elbo`` (the 10,000 test images,
reported). The reconstruction term uses one reparameterised sample per image from a fixed generator, so
an evaluation of the same parameters always gives the same value. Training minimises the same quantity on
mini-batches (one sample per image)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import loaders
from ..registry import register
from ._common import Batches, MinibatchInstance, Task, as_float, decay_at_75, seeded, split_validation, to_device


class VAE(nn.Module):
    def __init__(self, z_dim: int = 20, hidden: tuple[int, int] = (512, 256), n_in: int = 784):
        super().__init__()
        h1, h2 = hidden
        self.encoder = nn.Sequential(nn.Linear(n_in, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                                     nn.Linear(h2, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(),
                                     nn.Linear(h1, n_in))
        self.z_dim = z_dim

    def neg_elbo(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image negative ELBO (nats), one reparameterised sample ``z = mu + sigma * noise``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * noise
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return recon + kl


class VAEInstance(MinibatchInstance):
    def __init__(self, task: "FashionVAE", seed: int, data: dict[str, torch.Tensor]):
        self.gen = seeded(seed)
        self.task, self.data = task, to_device(data, task.device)
        self.model = VAE(task.z_dim, (task.hidden1, task.hidden2)).to(task.device)
        self.batches = Batches(len(data["x_train"]), task.batch_size, self.gen)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.default_steps = task.steps
        self._recent: list[float] = []

    def train_step(self, optimizer, step):
        x = self.data["x_train"][self.batches.next().to(self.task.device)]
        noise = torch.randn(len(x), self.task.z_dim, generator=self.gen).to(self.task.device)
        self.model.train()

        def closure():
            optimizer.zero_grad()
            loss = self.model.neg_elbo(x, noise).mean()
            loss.backward()
            return loss

        loss = as_float(optimizer.step(closure))
        self._recent = (self._recent + [loss])[-50:]
        return loss

    @torch.no_grad()
    def _neg_elbo(self, split: str) -> float:
        x = self.data[f"x_{split}"]
        if self.task.eval_size:
            x = x[: self.task.eval_size]
        gen = torch.Generator().manual_seed(12345)  # the same noise at every evaluation
        noise = torch.randn(len(x), self.task.z_dim, generator=gen).to(self.task.device)
        self.model.eval()
        total = sum(float(self.model.neg_elbo(x[i:i + 2000], noise[i:i + 2000]).sum()) for i in range(0, len(x), 2000))
        return total / len(x)

    def evaluate(self):
        out = {"val_neg_elbo": self._neg_elbo("val"), "test_neg_elbo": self._neg_elbo("test")}
        if self._recent:
            out["train_neg_elbo"] = float(np.mean(self._recent))
        return out

    def lr_scheduler(self, optimizer, total_steps):
        return decay_at_75(optimizer, total_steps) if self.task.lr_decay else None


@register
class FashionVAE(Task):
    experiment = "stand-in"  # an MLP VAE stands in for NVAE
    name = "vae_fmnist"
    description = "Fashion-MNIST VAE (MLP 784-512-256, z 20, Bernoulli decoder): negative ELBO (nats) on held-out images"
    stands_for = "generative modelling: a VAE's negative ELBO (ADOPT's NVAE experiment)"
    selection_metric = "val_neg_elbo"
    target_metric = "test_neg_elbo"
    supports_device = True
    lr_range = (1e-4, 1e-2)
    defaults = {"batch_size": 128, "z_dim": 20, "hidden1": 512, "hidden2": 256, "eval_size": None, "lr_decay": False}
    default_steps = 10 * 421  # 10 epochs of 54,000 images in batches of 128
    cost = "20 ms/step at load 4 (8.4 s/epoch of 421 steps), 65-95 ms/step at load 6-7; an evaluation of 6,000 + 10,000 images 3 s"

    def make(self, seed):
        xtr, ytr, xte, _ = loaders.fashion_mnist(self.data_dir, synthetic=self.synthetic)
        xtr, _, xva, _ = split_validation(xtr, ytr, 0.1)
        t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32).reshape(len(x), -1) / 255.0  # noqa: E731
        return VAEInstance(self, seed, {"x_train": t(xtr), "x_val": t(xva), "x_test": t(xte)})
