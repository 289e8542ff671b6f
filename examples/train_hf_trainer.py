"""The Hugging Face ``Trainer`` with an adamkit optimizer and scheduler: ``Trainer(optimizers=(opt, sched))``.

    python examples/train_hf_trainer.py --optimizer adabelief --steps 60

The model is a tiny GPT-2 built from a config (nothing is downloaded), trained as a language model on
sequences of a fixed random permutation walk, which it learns to predict. ``Trainer`` takes an optimizer and
a scheduler built outside it: any adamkit optimizer over the model's param groups (here without weight decay on
biases and norm weights), and a ``transformers`` schedule. The Trainer then steps both once per training step.
"""
from __future__ import annotations

import argparse
import tempfile

import torch
import transformers

import adamkit

VOCAB, LENGTH = 32, 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="adamw", choices=adamkit.list_optimizers())
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="the Trainer's folder (default: a temporary one)")
    return parser.parse_args(argv)


class PermutationWalks(torch.utils.data.Dataset):
    """Token ``t+1`` is ``permutation[token t]``: a sequence is determined by its first token."""

    def __init__(self, size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        permutation = torch.randperm(VOCAB, generator=generator)
        start = torch.randint(VOCAB, (size,), generator=generator)
        walks = [start]
        for _ in range(LENGTH - 1):
            walks.append(permutation[walks[-1]])
        self.sequences = torch.stack(walks, dim=1)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.sequences[index], "labels": self.sequences[index]}


def build_model(seed: int) -> transformers.GPT2LMHeadModel:
    transformers.set_seed(seed)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def main(argv: list[str] | None = None) -> transformers.Trainer:
    args = parse_args(argv)
    model = build_model(args.seed)
    groups = adamkit.param_groups_weight_decay(model, weight_decay=0.01)
    opt = adamkit.create_optimizer(args.optimizer, groups, lr=args.lr)
    sched = transformers.get_cosine_schedule_with_warmup(opt, num_warmup_steps=args.steps // 10,
                                                         num_training_steps=args.steps)
    with tempfile.TemporaryDirectory(prefix="train_hf_trainer-") as scratch:
        training = transformers.TrainingArguments(
            output_dir=args.output_dir or scratch, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            logging_steps=max(1, args.steps // 6), save_strategy="no", report_to="none", use_cpu=True,
            disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
        trainer = transformers.Trainer(model=model, args=training, optimizers=(opt, sched),
                                       train_dataset=PermutationWalks(args.batch_size * args.steps, args.seed))
        trainer.train()  # logs the loss and the learning rate every logging_steps
    return trainer


if __name__ == "__main__":
    main()
