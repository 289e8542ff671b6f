"""Click prediction at Criteo's shape (AGD's Criteo/Avazu CTR claims): a generated click log with Criteo's
layout — 13 numeric and 26 categorical fields, long-tailed id frequencies, up to 10 million raw ids per field
hashed into buckets — and a planted click model (:func:`adamkit.bench.data.generated.synthetic_criteo`), so
the best reachable AUC is known. Train, validation and test rows are independent draws (seeds 1, 2, 3) from
the same planted model. Models: an FM and a DeepFM (Guo et al. 2017) over the 26 hashed categorical fields and
the 13 numeric fields (each numeric field has an embedding vector scaled by its value, as in DeepFM).
Metrics: AUC (``val_auc`` selects, ``test_auc`` is reported) and log loss; ``best_test_auc`` is the planted
model's AUC on the test rows and ``auc_gap`` the distance to it."""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..data.generated import CRITEO_CATEGORICAL, CRITEO_NUMERIC, synthetic_criteo
from ..problem import Instance
from ..registry import register
from ._common import Batches, Task, as_float, roc_auc, seeded
from .ctr import ClickMetrics


class CriteoFM(nn.Module):
    """Bias + first-order terms + pairwise interactions <v_i x_i, v_j x_j> over the 26 categorical fields (one
    active id each, x = 1) and the 13 numeric fields (x = the transformed value); ``deep`` adds DeepFM's MLP
    over the concatenated field vectors (shared with the FM part)."""

    def __init__(self, n_buckets: int, k: int, deep: bool, hidden=(200, 200)):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.cat_w = nn.Embedding(n_buckets, 1)
        self.cat_v = nn.Embedding(n_buckets, k)
        self.num_w = nn.Parameter(torch.zeros(CRITEO_NUMERIC))
        self.num_v = nn.Parameter(torch.randn(CRITEO_NUMERIC, k) * 0.01)
        nn.init.zeros_(self.cat_w.weight)
        nn.init.normal_(self.cat_v.weight, std=0.01)
        self.mlp = None
        if deep:
            sizes = [(CRITEO_CATEGORICAL + CRITEO_NUMERIC) * k, *hidden]
            layers: list[nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def forward(self, x_cat, x_num):
        e = torch.cat([self.cat_v(x_cat), x_num.unsqueeze(-1) * self.num_v], 1)  # (B, 39, k)
        pair = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        out = self.bias + self.cat_w(x_cat).sum((1, 2)) + x_num @ self.num_w + pair
        if self.mlp is not None:
            out = out + self.mlp(e.flatten(1)).squeeze(1)
        return out


@lru_cache(maxsize=2)
def _dataset(n_train: int, n_eval: int, buckets: int):
    parts = {"train": synthetic_criteo(n_train, buckets, seed=1), "val": synthetic_criteo(n_eval, buckets, seed=2),
             "test": synthetic_criteo(n_eval, buckets, seed=3)}
    data = {}
    for split, (x_cat, x_num, y, _) in parts.items():
        data[split] = (torch.from_numpy(x_cat), torch.from_numpy(x_num), torch.from_numpy(y))
    best = {"best_val_auc": roc_auc(parts["val"][2], parts["val"][3]),
            "best_test_auc": roc_auc(parts["test"][2], parts["test"][3]),
            "click_rate": float(parts["train"][2].mean())}
    return data, best


class CriteoInstance(ClickMetrics, Instance):
    def __init__(self, task: "_CriteoCTR", seed: int):
        self.gen = seeded(seed)
        self.task = task
        n_train, n_eval = (4000, 2000) if task.synthetic else (task.n_train, task.n_eval)
        self.data, self.reference = _dataset(int(n_train), int(n_eval), int(task.buckets))
        self.model = CriteoFM(CRITEO_CATEGORICAL * task.buckets, task.k, task.deep)
        self.batches = Batches(len(self.data["train"][2]), task.batch_size, self.gen)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.default_steps = task.steps
        self._recent: list[float] = []

    def parameters(self):
        return list(self.model.parameters())

    def train_step(self, optimizer, step):
        idx = self.batches.next()
        x_cat, x_num, y = (t[idx] for t in self.data["train"])
        self.model.train()

        def closure():
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(self.model(x_cat, x_num), y)
            loss.backward()
            return loss

        loss = as_float(optimizer.step(closure))
        self._recent = (self._recent + [loss])[-50:]
        return loss

    def _rows(self, split):
        x_cat, x_num, y = self.data[split]
        return (x_cat, x_num), y


class _CriteoCTR(Task):
    experiment = "paper"  # FM/DeepFM at Criteo's shape, AGD's CTR experiment
    selection_metric = "val_auc"
    maximize_metric = True
    target_metric = "test_auc"
    lr_range = (1e-4, 1e-1)
    stands_for = "click-through-rate prediction at Criteo's shape (AGD's Criteo/Avazu FM and DeepFM experiments)"
    deep = False
    defaults = {"batch_size": 1024, "k": 10, "n_train": 500_000, "n_eval": 100_000, "buckets": 20_000}
    default_steps = 2 * 488  # 2 epochs of 500,000 rows

    def make(self, seed):
        return CriteoInstance(self, seed)


@register
class FMCriteo(_CriteoCTR):
    name = "fm_criteo"
    description = ("Criteo-shaped synthetic click log (13 numeric + 26 hashed categorical fields, up to 10 M ids "
                   "per field into 20k buckets, planted model), FM k=10: AUC, log loss")
    cost = ("generating the 700k rows: about 40 s at load 4, 95-165 s at load 7, once per worker process (cached); 90 ms/step (44 s/"
            "epoch of 488 steps) at load 7; an evaluation 1.6 s")


@register
class DeepFMCriteo(_CriteoCTR):
    name = "deepfm_criteo"
    description = "Criteo-shaped synthetic click log (planted model, best AUC known), DeepFM k=10 + MLP 200-200"
    deep = True
    cost = ("generating the 700k rows: about 40 s at load 4, 95-165 s at load 7, once per worker process (cached); 32 ms/step at "
            "load 3, 161 ms/step at load 7 (488 steps/epoch); an evaluation 6 s")
