"""Click prediction: a factorisation machine and a small DeepFM, on MovieLens-100k as implicit
feedback (a "click" is a rating >= 4; split by time: the first 80% of ratings train, the next 10%
validate, the last 10% test) and on a synthetic Criteo-like log whose planted model gives the best
possible AUC. Metrics: AUC and log-loss."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import loaders
from ..registry import register
from ._common import Batches, MinibatchInstance, Task, roc_auc, seeded

ML_FIELDS = ("user", "item", "age", "gender", "occupation", "genre")


class FM(nn.Module):
    """Bias + first-order weights + pairwise interactions <v_i, v_j> of the active features."""

    def __init__(self, n_features: int, k: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.linear = nn.Embedding(n_features, 1)
        self.embed = nn.Embedding(n_features, k)
        nn.init.zeros_(self.linear.weight)
        nn.init.normal_(self.embed.weight, std=0.01)

    def fm_terms(self, x):
        e = self.embed(x)  # (B, F, k)
        pair = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return self.bias + self.linear(x).sum((1, 2)) + pair, e

    def forward(self, x):
        return self.fm_terms(x)[0]


class DeepFM(FM):
    """FM plus an MLP over the concatenated field embeddings (shared with the FM part)."""

    def __init__(self, n_features: int, k: int, n_fields: int, hidden=(64, 32)):
        super().__init__(n_features, k)
        sizes = [n_fields * k, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def forward(self, x):
        fm, e = self.fm_terms(x)
        return fm + self.mlp(e.flatten(1)).squeeze(1)


class ClickMetrics:
    """What every click-prediction instance reports: validation and test AUC and log loss, the gap to the known
    optimum's test AUC where there is one (``reference``: ``best_test_auc``, ...), the recent training log loss.

    An instance gives ``model``, ``reference``, ``_recent`` (recent training losses) and ``_rows(split)``: the
    model's inputs (a tuple of tensors, batched along dim 0) and the labels of a split.
    """

    EVAL_BATCH = 8192

    @torch.no_grad()
    def _scores(self, split):
        inputs, y = self._rows(split)
        self.model.eval()
        logits = torch.cat([self.model(*(x[i:i + self.EVAL_BATCH] for x in inputs))
                            for i in range(0, len(y), self.EVAL_BATCH)])
        return {f"{split}_auc": roc_auc(y.numpy(), logits.numpy()),
                f"{split}_logloss": float(F.binary_cross_entropy_with_logits(logits, y))}

    def evaluate(self):
        out = {**self._scores("val"), **self._scores("test"), **self.reference}
        if "best_test_auc" in out:
            out["auc_gap"] = out["best_test_auc"] - out["test_auc"]
        if self._recent:
            out["train_logloss"] = float(np.mean(self._recent))
        return out


class CTRInstance(ClickMetrics, MinibatchInstance):
    loss_fn = staticmethod(F.binary_cross_entropy_with_logits)

    def __init__(self, task: "_CTR", seed: int, data: dict, n_features: int, extra: dict[str, float]):
        self.gen = seeded(seed)
        self.task, self.data, self.reference = task, data, extra
        n_fields = data["x_train"].shape[1]
        self.model = DeepFM(n_features, task.k, n_fields) if task.deep else FM(n_features, task.k)
        self.batches = Batches(len(data["y_train"]), task.batch_size, self.gen)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.default_steps = task.steps
        self._recent: list[float] = []

    def _rows(self, split):
        return (self.data[f"x_{split}"],), self.data[f"y_{split}"]


class _CTR(Task):
    experiment = "stand-in"  # small click-prediction data
    selection_metric = "val_auc"
    maximize_metric = True
    target_metric = "test_auc"
    lr_range = (1e-4, 1e-1)
    stands_for = "click-through-rate prediction (the papers' Criteo/Avazu FM and DeepFM experiments)"
    deep = False

    def make(self, seed):
        data, n_features, extra = self.dataset()
        return CTRInstance(self, seed, data, n_features, extra)


class _MovieLens(_CTR):
    experiment = "paper"  # FM/DeepFM click prediction on real ratings, AGD's kind of CTR experiment
    defaults = {"batch_size": 512, "k": 16}
    default_steps = 20 * 156  # 20 epochs of 80,000 ratings

    def dataset(self):
        d = loaders.movielens_100k(self.data_dir, synthetic=self.synthetic)
        order = np.argsort(d["timestamp"], kind="stable")
        offsets, cols = 0, []
        for field in ML_FIELDS:
            col = d[field][order]
            cols.append(col + offsets)
            offsets += int(d[field].max()) + 1
        x = torch.tensor(np.stack(cols, 1))
        y = torch.tensor((d["rating"][order] >= 4).astype(np.float32))
        n = len(y)
        a, b = int(0.8 * n), int(0.9 * n)
        data = {"x_train": x[:a], "y_train": y[:a], "x_val": x[a:b], "y_val": y[a:b], "x_test": x[b:], "y_test": y[b:]}
        return data, offsets, {}


@register
class FMMovieLens(_MovieLens):
    name = "fm_movielens"
    description = "MovieLens-100k implicit (rating>=4), time split, factorisation machine k=16"
    target = 0.75


@register
class DeepFMMovieLens(_MovieLens):
    name = "deepfm_movielens"
    description = "MovieLens-100k implicit (rating>=4), time split, DeepFM k=16 + MLP 64-32"
    deep = True
    target = 0.75


class _SyntheticCTR(_CTR):
    defaults = {"batch_size": 1024, "k": 8, "n_train": 200_000, "n_eval": 50_000, "fields": 8, "buckets": 1000}
    default_steps = 10 * 195

    def dataset(self):
        n_tr, n_ev = (5000, 2000) if self.synthetic else (self.n_train, self.n_eval)
        kw = dict(n_fields=self.fields, buckets=self.buckets)
        parts = {"train": loaders.synthetic_ctr(n_tr, seed=1, **kw), "val": loaders.synthetic_ctr(n_ev, seed=2, **kw),
                 "test": loaders.synthetic_ctr(n_ev, seed=3, **kw)}
        data = {}
        for split, (x, y, _) in parts.items():
            data[f"x_{split}"], data[f"y_{split}"] = torch.tensor(x), torch.tensor(y)
        extra = {"best_val_auc": roc_auc(parts["val"][1], parts["val"][2]),
                 "best_test_auc": roc_auc(parts["test"][1], parts["test"][2])}
        return data, self.fields * self.buckets, extra


@register
class FMSyntheticCTR(_SyntheticCTR):
    name = "fm_synthetic_ctr"
    description = "synthetic Criteo-like log (8 hashed power-law fields, planted FM: best AUC known), FM k=8"


@register
class DeepFMSyntheticCTR(_SyntheticCTR):
    name = "deepfm_synthetic_ctr"
    description = "synthetic Criteo-like log (8 hashed power-law fields, planted FM), DeepFM k=8 + MLP 64-32"
    deep = True
