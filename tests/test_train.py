"""The training loop's guard against a non-finite loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from causal_wsss.errors import CausalWSSSError
from causal_wsss.train import train_one_epoch


def test_nan_loss_stops_with_one_message_naming_stage_and_step():
    model = nn.Linear(3, 1)
    loader = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4,
                        collate_fn=lambda rows: {"x": torch.stack([r[0] for r in rows])})
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        out = m(batch["x"]).mean()
        return out if len(calls) < 2 else out * float("nan")

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CausalWSSSError, match=r"seg: the loss is nan at step 2 .*learning rate"):
        train_one_epoch(model, loader, opt, loss_fn=loss_fn, device=torch.device("cpu"),
                        amp=False, progress=False, desc="seg")



def test_an_epoch_iterates_its_loader_once_with_progress_on():
    """tqdm.auto's asyncio class calls iter() on an iterable it is given; with DataLoader workers
    that starts a second, unused set of workers per epoch. The loop must not hand it the loader."""

    class CountingLoader(DataLoader):
        iters = 0

        def __iter__(self):
            CountingLoader.iters += 1
            return super().__iter__()

    model = nn.Linear(3, 1)
    loader = CountingLoader(TensorDataset(torch.randn(8, 3)), batch_size=4,
                            collate_fn=lambda rows: {"x": torch.stack([r[0] for r in rows])})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = train_one_epoch(model, loader, opt, loss_fn=lambda m, b: m(b["x"]).pow(2).mean(),
                            device=torch.device("cpu"), amp=False, progress=True, desc="cam")
    assert CountingLoader.iters == 1 and state.step == 2
