"""GANs: a DCGAN and a WGAN-GP on Fashion-MNIST, and a data-free GAN on a ring of 8 Gaussians.

A GAN has two players and so two optimizers, both the optimizer under test with the same
hyperparameters. The runner builds one over ``parameters()`` (the generator); the instance builds
the discriminator's from ``optimizer_factory`` when a runner sets one (``instance.optimizer_factory
= lambda params: ...``), else as a copy of the runner's optimizer (same class, same hyperparameters,
:func:`~._common.clone_optimizer`), and keeps its learning rate equal to the generator's.

Fashion-MNIST GANs are scored by a Fréchet distance in the 128-d feature space of a Fashion-MNIST
classifier (trained once with adamkit's Adam and cached under the data cache's ``derived/``, verified
against its size+hash record before every use and retrained when damaged; with a read-only data cache it is
cached in ``$XDG_CACHE_HOME/adamkit/derived`` or, failing that, kept in memory) against the test set, and by class coverage: how many of the 10 classes the classifier finds among the
samples (a class counts when it holds at least 2% of them)."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import adamkit
from adamkit import _integrity

from ..data import loaders
from ..data.store import cache_dir
from ..problem import Instance
from ..registry import register
from ._common import Task, as_float, frechet_distance, make_second_optimizer, seeded, sync_lr
from .vision import small_cnn

# ----------------------------------------------------------------------------- feature classifier

_FEATURES: dict[tuple, tuple] = {}


def _fmnist_images(data_dir, synthetic):
    xtr, ytr, xte, yte = loaders.fashion_mnist(data_dir, synthetic=synthetic)
    scale = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32).div(127.5).sub(1).unsqueeze(1)  # noqa: E731
    return scale(xtr), torch.tensor(ytr), scale(xte), torch.tensor(yte)


def feature_classifier(data_dir=None, synthetic: bool = False, steps: int = 1500, ref_size: int = 10_000):
    """The cached Fashion-MNIST classifier (images in [-1, 1]) and the test set's feature statistics.

    Returns ``(net, mu, sigma, test_accuracy)``; the penultimate layer (128 units) gives the features.
    Trained once per (steps, synthetic) and stored in ``<cache>/derived/`` (else the first writable folder
    of :func:`derived_dirs`, else kept in memory) with its size+hash record; a cached file that does not
    match its record or does not load is retrained, with a warning naming it. The reference statistics
    use the first ``ref_size`` test images.
    """
    key = (str(cache_dir(data_dir)), bool(synthetic), int(steps), int(ref_size))
    if key in _FEATURES:
        return _FEATURES[key]
    name = f"fmnist_classifier_v1_s{steps}{'_synthetic' if synthetic else ''}.pt"
    folders = derived_dirs(data_dir)
    _, _, xte, yte = _fmnist_images(data_dir, synthetic)
    xte, yte = xte[:ref_size], yte[:ref_size]
    net = next((n for n in (_load_verified(folder / name) for folder in folders) if n is not None), None)
    if net is None:
        xtr, ytr, _, _ = _fmnist_images(data_dir, synthetic)
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        net = small_cnn()
        opt = adamkit.Adam(net.parameters(), lr=1e-3)
        for step in range(steps):
            idx = torch.randint(0, len(ytr), (128,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
            opt.step()
        _save_verified(net, folders, name)
    net.eval().requires_grad_(False)
    feats, logits = _features(net, xte)
    accuracy = float((logits.argmax(1) == yte).float().mean())
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
    _FEATURES[key] = (net, mu, sigma, accuracy)
    return _FEATURES[key]


def derived_dirs(data_dir=None) -> list[Path]:
    """Where derived models are cached, in the order they are tried: the data cache's ``derived/``, then the
    user's cache (``$XDG_CACHE_HOME/adamkit/derived``, default ``~/.cache/adamkit/derived``) for a read-only
    data cache. (Real-data models depend only on the pinned data, so any of them serves every cache.)"""
    user = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "adamkit" / "derived"
    return [cache_dir(data_dir) / "derived", user]


def _load_verified(path: Path) -> nn.Sequential | None:
    """The classifier cached at ``path`` if it matches its size+hash record and loads; else None (retrain)."""
    if not path.is_file():
        return None
    found = _integrity.problem_once(path)
    if found is not None:
        warnings.warn(f"retraining the GAN feature classifier: {found}", RuntimeWarning, stacklevel=3)
        return None
    net = small_cnn()
    try:
        net.load_state_dict(torch.load(path, weights_only=True)["state"])
    except Exception as exc:  # a file that matches its record but does not load: written by something else
        warnings.warn(f"retraining the GAN feature classifier: {path} does not load ({type(exc).__name__}: {exc})",
                      RuntimeWarning, stacklevel=3)
        return None
    return net


def _save_verified(net: nn.Sequential, folders: list[Path], name: str) -> Path | None:
    """Cache ``net`` (atomically, with its size+hash record) in the first folder that can be written."""
    reasons = []
    for folder in folders:
        path = folder / name
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"state": net.state_dict()}, tmp)
            _integrity.record_path(path).unlink(missing_ok=True)
            os.replace(tmp, path)
            _integrity.record(path)
            return path
        except (OSError, RuntimeError) as exc:  # read-only or full (torch.save raises RuntimeError on write errors)
            reasons.append(f"{folder}: {exc}")
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    warnings.warn("the GAN feature classifier could not be cached (" + "; ".join(reasons) + "); it is kept in "
                  "memory for this process only", RuntimeWarning, stacklevel=3)
    return None


@torch.no_grad()
def _features(net: nn.Sequential, x: torch.Tensor):
    feats, logits = [], []
    for i in range(0, len(x), 1000):
        h = net[:-1](x[i:i + 1000])
        feats.append(h)
        logits.append(net[-1](h))
    return torch.cat(feats).double().numpy(), torch.cat(logits)


# ----------------------------------------------------------------------------- models

class Generator(nn.Module):
    def __init__(self, z: int = 64, width: int = 64):
        super().__init__()
        self.z = z
        self.fc = nn.Sequential(nn.Linear(z, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())
        self.width = width

    def forward(self, z):
        return self.net(self.fc(z).view(-1, 2 * self.width, 7, 7))


def discriminator(width: int = 64, batchnorm: bool = True) -> nn.Sequential:
    norm = nn.BatchNorm2d(2 * width) if batchnorm else nn.Identity()
    return nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 4, 2, 1), norm, nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))


def _mlp(n_in, n_out, width=128):
    return nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, n_out))


# ----------------------------------------------------------------------------- training

class GANInstance(Instance):
    #: a runner may set this to build the discriminator's optimizer (params -> optimizer)
    optimizer_factory = None

    def __init__(self, task: "_GANTask", seed: int):
        self.gen = seeded(seed)
        self.task = task
        self.device = task.device
        self.G, self.D = (m.to(self.device) for m in task.models())
        self.d_opt = None
        self.default_steps = task.steps
        self.d_loss = math.nan
        sampler = task.real_sampler(self.gen)  # drawn on the CPU from the seed, then moved
        self.sample_real = lambda n: sampler(n).to(self.device)

    def parameters(self):
        return list(self.G.parameters())

    def noise(self, n):
        return torch.randn(n, self.G_z, generator=self.gen).to(self.device)

    @property
    def G_z(self):
        return self.task.z_dim

    def train_step(self, optimizer, step):
        if self.d_opt is None:
            self.d_opt = make_second_optimizer(self, optimizer, self.D.parameters())
        sync_lr(optimizer, self.d_opt)
        t = self.task
        self.G.train(); self.D.train()
        for _ in range(t.n_critic):
            real = self.sample_real(t.batch_size)
            fake = self.G(self.noise(t.batch_size)).detach()

            def d_closure():
                self.d_opt.zero_grad()
                loss = t.d_loss(self.D, real, fake)
                loss.backward()
                return loss

            self.d_loss = as_float(self.d_opt.step(d_closure))
            t.after_critic_step(self.D)
        z = self.noise(t.batch_size)

        def g_closure():
            optimizer.zero_grad()
            loss = t.g_loss(self.D(self.G(z)))
            loss.backward()
            return loss

        return as_float(optimizer.step(g_closure))

    @torch.no_grad()
    def samples(self, n):
        """``n`` samples of the generator, on the CPU (where they are scored)."""
        self.G.eval()
        gen = torch.Generator().manual_seed(999)  # the same latent points at every evaluation
        return torch.cat([self.G(torch.randn(min(500, n - i), self.G_z, generator=gen).to(self.device)).cpu()
                          for i in range(0, n, 500)])

    def evaluate(self):
        x = self.samples(self.task.eval_samples)
        return {**self.task.score(x), **self.task.kept_samples(x), "d_loss": self.d_loss}


def _bce_d(D, real, fake):
    on_real, on_fake = D(real), D(fake)
    return (F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real))
            + F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake)))


def _bce_g(logits):  # non-saturating generator loss
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


class _GANTask(Task):
    experiment = "stand-in"  # small GANs stand in for the papers' CIFAR WGANs and SN-GAN
    stands_for = "GAN training (the papers' DCGAN/WGAN experiments, AdaBelief's GAN claims)"
    supports_device = True
    lr_range = (1e-5, 1e-2)
    n_critic_default: ClassVar[int] = 1
    betas: ClassVar[tuple[float, float]] = (0.5, 0.999)

    def make(self, seed):
        return GANInstance(self, seed)

    def optimizer_overrides(self, optimizer: str) -> dict[str, Any]:
        """GANs train with beta1 = 0.5 (DCGAN and WGAN-GP practice); the runner gives it to every optimizer that
        takes betas (``runner.optimizer_kwargs``)."""
        return {"betas": self.betas}

    d_loss = staticmethod(_bce_d)
    g_loss = staticmethod(_bce_g)

    def kept_samples(self, x) -> dict[str, list[float]]:
        """What an evaluation keeps of its samples ``x`` (a list-valued metric: kept in the final metrics only):
        nothing here; the ring's 2-D points in :class:`RingGAN`."""
        return {}

    def after_critic_step(self, D: nn.Module) -> None:
        """Called after each discriminator (critic) step: nothing here; WGAN's weight clipping in a subclass."""


class _FashionGAN(_GANTask):
    selection_metric = "fd"
    target_metric = "fd"
    defaults = {"batch_size": 64, "z_dim": 64, "width": 64, "eval_samples": 2000, "classifier_steps": 1500,
                "ref_size": 10_000, "n_critic": 1}
    default_steps = 3000

    def models(self):
        return Generator(self.z_dim, self.width), discriminator(self.width, batchnorm=self.batchnorm)

    batchnorm: ClassVar[bool] = True
    #: generated images kept in a run's final metrics (``samples_images``: ``kept`` images of 28×28, row by row,
    #: grey levels 0–255), for the report's figure of what each arm generates
    kept: ClassVar[int] = 8

    def kept_samples(self, x):
        """The first ``kept`` of the evaluation's images (the same latent points at every evaluation), the
        generator's tanh range [−1, 1] mapped to grey levels 0–255, flattened: a list-valued metric, so kept in
        the final metrics only (not in the curve). A NaN pixel stays NaN; ±inf clamps to 0 or 255."""
        grey = ((x[:self.kept].double().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
        return {"samples_images": [float(v) for v in grey.reshape(-1)]}

    def real_sampler(self, gen):
        xtr, _, _, _ = _fmnist_images(self.data_dir, self.synthetic)
        return lambda n: xtr[torch.randint(0, len(xtr), (n,), generator=gen)]

    def score(self, x):
        net, mu, sigma, _ = feature_classifier(self.data_dir, self.synthetic, self.classifier_steps, self.ref_size)
        feats, logits = _features(net, x)
        share = torch.bincount(logits.argmax(1), minlength=10).double() / len(x)
        nz = share[share > 0]
        return {"fd": frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), mu, sigma),
                "classes_covered": float((share >= 0.02).sum()),
                "class_entropy": float(-(nz * nz.log()).sum() / math.log(10))}


@register
class DCGANFashion(_FashionGAN):
    name = "dcgan_fmnist"
    description = "DCGAN (2 transposed convs / 2 convs, batch norm) on Fashion-MNIST; Fréchet distance in classifier features"


def _gradient_penalty(D, real, fake):
    alpha = torch.rand(len(real), *([1] * (real.dim() - 1))).to(real.device)  # drawn on the CPU, as everywhere
    mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(D(mix).sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


@register
class WGANFashion(_FashionGAN):
    name = "wgan_fmnist"
    description = "WGAN-GP (5 critic steps per generator step, no batch norm in the critic) on Fashion-MNIST"
    defaults = {**_FashionGAN.defaults, "n_critic": 5, "gp": 10.0}
    default_steps = 2000
    batchnorm = False
    betas = (0.5, 0.9)

    def d_loss(self, D, real, fake):
        return D(fake).mean() - D(real).mean() + self.gp * _gradient_penalty(D, real, fake)

    @staticmethod
    def g_loss(scores):
        return -scores.mean()


@register
class RingGAN(_GANTask):
    name = "gan_ring8"
    description = "GAN on a ring of 8 Gaussians (radius 2, std 0.02): modes covered, high-quality share"
    selection_metric = "fd"
    target_metric = "fd"  # minimised like the selection metric (modes_covered and high_quality are reported too)
    defaults = {"batch_size": 256, "z_dim": 16, "eval_samples": 2000, "n_critic": 1}
    default_steps = 5000
    radius, std = 2.0, 0.02
    #: samples kept in a run's final metrics (``samples_xy``: x0, y0, x1, y1, ... rounded to 1e-4), for the
    #: report's figure of what each arm generates
    kept = 200

    def kept_samples(self, x):
        """The first ``kept`` of the evaluation's samples (the same latent points at every evaluation), flattened:
        a list-valued metric, so kept in the final metrics only (not in the curve)."""
        return {"samples_xy": [round(float(v), 4) for v in x[:self.kept].reshape(-1)]}

    def centers(self):
        angles = torch.arange(8) * (2 * math.pi / 8)
        return self.radius * torch.stack([angles.cos(), angles.sin()], 1)

    def models(self):
        return _mlp(self.z_dim, 2), _mlp(2, 1)

    def real_sampler(self, gen):
        centers = self.centers()
        return lambda n: centers[torch.randint(0, 8, (n,), generator=gen)] + self.std * torch.randn(n, 2, generator=gen)

    def score(self, x):
        dist = torch.cdist(x.double(), self.centers().double())
        nearest, mode = dist.min(1)
        good = nearest < 3 * self.std
        counts = torch.bincount(mode[good], minlength=8)
        true_cov = (self.radius ** 2 / 2 + self.std ** 2) * np.eye(2)
        x64 = x.double().numpy()
        return {"fd": frechet_distance(x64.mean(0), np.cov(x64, rowvar=False), np.zeros(2), true_cov),
                "modes_covered": float((counts >= 0.01 * len(x)).sum()),
                "high_quality": float(good.double().mean())}
