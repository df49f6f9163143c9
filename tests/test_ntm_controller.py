"""The NTM's feed-forward controller (beside the LSTM one)."""

from __future__ import annotations

import pytest
import torch

from fewshot.data.copy_task import copy_batch
from fewshot.nn.memory import NTM


def test_feedforward_controller_keeps_no_hidden_state_and_trains():
    torch.manual_seed(0)
    model = NTM(9, 8, hidden=16, slots=12, width=6, controller="feedforward")
    assert isinstance(model.controller, torch.nn.Linear)
    b = copy_batch(3, 4, generator=torch.Generator().manual_seed(0))
    y, wr, ww = model(b.inputs, return_weights=True)
    assert y.shape == (9, 3, 8) and torch.allclose(wr.sum(-1), torch.ones(9, 3), atol=1e-5)
    # its only recurrence is through memory and the read vector: the same input and read give the same h
    state = model.initial_state(2)
    x = torch.randn(2, 9)
    out1, s1 = model.step(x, state)
    assert torch.equal(s1.c, state.c)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="controller"):
        NTM(9, 8, controller="gru")
