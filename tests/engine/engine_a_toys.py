"""Toy model, data and loader shared by ENGINE-A's tests (not a test module)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class ToyNet(nn.Module):
    """Conv2d + BatchNorm + Linear (+ optional dropout, so the RNG matters)."""

    def __init__(self, bn: bool = True, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


def split(model: nn.Module):
    """(params, buffers) of a module as plain dicts of detached tensors."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    return params, buffers


def make_loss_fn(model: nn.Module):
    def loss_fn(params, buffers, batch):
        x, y = batch
        logits = functional_call(model, (params, buffers), (x,))
        loss_cls = F.cross_entropy(logits, y)
        loss_reg = 0.1 * logits.pow(2).mean()
        return loss_cls + loss_reg, {"loss_cls": loss_cls, "loss_reg": loss_reg}

    return loss_fn


def toy_data(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


class ToyLoader:
    """Shuffles with its own generator seeded by ``seed + epoch``; mid-epoch resumable."""

    def __init__(self, data, batch_size: int, seed: int = 0, shuffle: bool = True):
        self.x, self.y = data
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.batches_done = 0
        self.epochs_seen: list[int] = []

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def state_dict(self):
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, d):
        self.epoch = d["epoch"]
        self.batches_done = d["batches_done"]

    def __iter__(self):
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed + self.epoch)
            )
        else:
            order = torch.arange(n)
        start = self.batches_done
        self.batches_done = 0
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            self.batches_done = b + 1
            yield self.x[idx], self.y[idx]
        self.batches_done = 0
