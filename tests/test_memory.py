"""NTM addressing stages, erase/add algebra and LRUA, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot.data.copy_task import bits_wrong, copy_batch
from fewshot.nn.memory import (
    LRUA,
    NTM,
    circular_shift,
    content_addressing,
    erase_add,
    interpolate,
    least_used,
    lrua_initial_state,
    lrua_step,
    ntm_address,
    read_memory,
    sharpen,
)


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_content_addressing_hand_computed():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    key = torch.tensor([[2.0, 0.0]])  # cosine with the slots: 1, 0, 1/sqrt(2)
    w = content_addressing(memory, key, beta=2.0)
    expected = _softmax([2.0, 0.0, 2.0 / math.sqrt(2)])
    assert torch.allclose(w, torch.tensor([expected]), atol=1e-6)


def test_content_addressing_beta_zero_is_uniform_and_large_beta_is_argmax():
    memory = torch.randn(3, 7, 4)
    key = torch.randn(3, 4)
    assert torch.allclose(content_addressing(memory, key, 0.0), torch.full((3, 7), 1 / 7))
    sharp = content_addressing(memory, key, torch.full((3,), 1e4))
    cos = torch.nn.functional.cosine_similarity(memory, key[:, None], dim=-1)
    assert torch.equal(sharp.argmax(-1), cos.argmax(-1))
    assert torch.allclose(sharp.max(-1).values, torch.ones(3), atol=1e-4)


def test_interpolation_hand_computed():
    wc = torch.tensor([[1.0, 0.0, 0.0]])
    wp = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(interpolate(wc, wp, torch.tensor([0.25])), torch.tensor([[0.25, 0.0, 0.75]]))
    assert torch.equal(interpolate(wc, wp, 1.0), wc)
    assert torch.equal(interpolate(wc, wp, 0.0), wp)


def test_shift_is_circular():
    w = torch.tensor([[0.7, 0.2, 0.0, 0.0, 0.1]])
    plus_one = torch.tensor([[0.0, 0.0, 1.0]])  # offsets -1, 0, +1
    minus_one = torch.tensor([[1.0, 0.0, 0.0]])
    # the focus moves one slot up, the last slot wrapping round to the first
    assert torch.allclose(circular_shift(w, plus_one), torch.tensor([[0.1, 0.7, 0.2, 0.0, 0.0]]))
    assert torch.allclose(circular_shift(w, minus_one), torch.tensor([[0.2, 0.0, 0.0, 0.1, 0.7]]))
    assert torch.allclose(circular_shift(w, torch.tensor([[0.0, 1.0, 0.0]])), w)


def test_shift_hand_computed_mixture():
    w = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    s = torch.tensor([[0.1, 0.6, 0.3]])
    # w~(i) = sum_j w(j) s(i - j): mass 0.6 stays, 0.3 moves to slot 1, 0.1 wraps to slot 3
    assert torch.allclose(circular_shift(w, s), torch.tensor([[0.6, 0.3, 0.0, 0.1]]))


def test_shift_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd number"):
        circular_shift(torch.ones(1, 4) / 4, torch.ones(1, 2) / 2)


def test_sharpen_hand_computed():
    w = torch.tensor([[0.5, 0.3, 0.2]])
    out = sharpen(w, 2.0)
    expected = torch.tensor([[0.25, 0.09, 0.04]]) / 0.38
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(sharpen(w, 1.0), w, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 12), seed=st.integers(0, 10_000), gamma=st.floats(1.0, 30.0))
def test_sharpening_keeps_argmax_and_normalisation(n, seed, gamma):
    g = torch.Generator().manual_seed(seed)
    w = torch.softmax(3 * torch.randn(2, n, generator=g), -1)
    out = sharpen(w, gamma)
    assert torch.allclose(out.sum(-1), torch.ones(2), atol=1e-5)
    assert torch.equal(out.argmax(-1), w.argmax(-1))
    assert (out.max(-1).values >= w.max(-1).values - 1e-6).all()  # never flatter


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 16), m=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_full_addressing_weights_sum_to_one(n, m, seed):
    g = torch.Generator().manual_seed(seed)
    b = 3
    memory = torch.randn(b, n, m, generator=g)
    w_prev = torch.softmax(torch.randn(b, n, generator=g), -1)
    key = torch.randn(b, m, generator=g)
    beta = torch.rand(b, generator=g) * 5
    gate = torch.rand(b, generator=g)
    shift = torch.softmax(torch.randn(b, 3, generator=g), -1)
    gamma = 1 + torch.rand(b, generator=g) * 5
    w = ntm_address(memory, w_prev, key, beta, gate, shift, gamma)
    assert w.shape == (b, n)
    assert (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(b), atol=1e-5)


def test_erase_add_algebra():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    w = torch.tensor([[1.0, 0.0]])
    erase = torch.tensor([[1.0, 0.0]])
    add = torch.tensor([[5.0, 6.0]])
    # slot 0: erase its first component then add (5, 6); slot 1 untouched
    assert torch.allclose(erase_add(memory, w, erase, add), torch.tensor([[[5.0, 8.0], [3.0, 4.0]]]))
    # partial weights: M(i) * (1 - w(i) e) + w(i) a
    w = torch.tensor([[0.5, 0.25]])
    erase = torch.tensor([[1.0, 0.5]])
    add = torch.tensor([[2.0, -4.0]])
    expected = torch.tensor([[[1 * 0.5 + 1.0, 2 * 0.75 - 2.0], [3 * 0.75 + 0.5, 4 * 0.875 - 1.0]]])
    assert torch.allclose(erase_add(memory, w, erase, add), expected)


def test_full_erase_then_read_returns_the_added_vector():
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 5, 3, generator=g)
    w = torch.zeros(2, 5)
    w[:, 2] = 1.0
    add = torch.randn(2, 3, generator=g)
    new = erase_add(memory, w, torch.ones(2, 3), add)
    assert torch.allclose(read_memory(new, w), add)
    keep = [0, 1, 3, 4]
    assert torch.equal(new[:, keep], memory[:, keep])


def test_read_is_weighted_sum():
    memory = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert torch.allclose(read_memory(memory, torch.tensor([[0.25, 0.75]])), torch.tensor([[0.25, 1.5]]))


def test_least_used_picks_smallest_usage():
    usage = torch.tensor([[0.9, 0.1, 0.5, 0.05], [0.0, 2.0, 3.0, 1.0]])
    lu = least_used(usage, 2)
    assert lu.shape == (2, 2, 4)
    assert lu[0, 0].argmax() == 3 and lu[0, 1].argmax() == 1
    assert lu[1, 0].argmax() == 0 and lu[1, 1].argmax() == 3
    assert torch.equal(lu.sum(-1), torch.ones(2, 2))


def test_lrua_writes_the_add_vector_to_the_least_used_slot_when_the_gate_is_closed():
    state = lrua_initial_state(1, 4, 3, heads=1)
    state.usage = torch.tensor([[0.9, 0.8, 0.05, 0.7]])
    state.w_lu = least_used(state.usage, 1)
    state.memory = torch.ones(1, 4, 3)
    key = torch.tensor([[[0.3, -0.2, 0.5]]])
    add = torch.tensor([[[-0.7, 0.1, 0.4]]])
    new = lrua_step(state, key, add, alpha=torch.tensor([[-50.0]]), gamma=0.95)
    # slot 2 (least used) was zeroed then written with the add vector (not the key); the others are unchanged
    assert torch.allclose(new.memory[0, 2], add[0, 0], atol=1e-6)
    assert torch.equal(new.memory[0, [0, 1, 3]], torch.ones(3, 3))
    assert torch.allclose(new.usage, 0.95 * state.usage + new.w_read.sum(1) + least_used(state.usage, 1).sum(1), atol=1e-6)


def test_lrua_open_gate_writes_to_the_previous_read_location():
    state = lrua_initial_state(1, 4, 2, heads=1)
    state.memory = torch.zeros(1, 4, 2)
    state.w_read = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    state.w_lu = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
    add = torch.tensor([[[1.0, 2.0]]])
    new = lrua_step(state, torch.ones(1, 1, 2), add, alpha=torch.tensor([[50.0]]), gamma=0.9)
    assert torch.allclose(new.memory[0, 1], add[0, 0])
    assert torch.allclose(new.memory[0, [0, 2, 3]], torch.zeros(3, 2))


def test_lrua_reads_the_previous_memory_not_the_item_it_writes():
    """The defect of the first implementation: writing the key and then reading with it found the
    item itself (cosine 1) instead of the earlier item stored in memory."""
    state = lrua_initial_state(1, 4, 3, heads=1)
    stored = torch.tensor([1.0, 0.0, 0.0])
    state.memory[0, 0] = stored  # an earlier item; slots 1-3 are empty
    state.usage = torch.tensor([[5.0, 0.0, 1.0, 2.0]])
    state.w_lu = least_used(state.usage, 1)  # slot 1 is written this step
    key = torch.tensor([[[0.0, 1.0, 0.0]]])  # unlike the stored item...
    new = lrua_step(state, key, key.clone(), alpha=torch.tensor([[-50.0]]), gamma=0.95, beta=50.0)
    assert torch.allclose(new.memory[0, 1], key[0, 0])  # ...and written this step
    # the read did not find the item just written: the slot looks like the other empty ones
    assert torch.allclose(new.w_read[0, 0, 1], new.w_read[0, 0, 2]) and new.w_read[0, 0, 1] < 0.5
    # a key like the stored item reads it back
    new = lrua_step(state, stored.view(1, 1, 3), key.clone(), alpha=torch.tensor([[-50.0]]), gamma=0.95, beta=50.0)
    assert new.w_read[0, 0, 0] > 0.99
    assert torch.allclose(new.read[0, 0], stored, atol=1e-2)


def test_lrua_zeroes_one_slot_per_step_whatever_the_number_of_heads():
    state = lrua_initial_state(2, 8, 3, heads=4)
    state.memory = torch.ones(2, 8, 3)
    state.usage = torch.arange(8.0).flip(0).expand(2, 8).clone()  # slot 7 least used, then 6, 5, 4
    state.w_lu = least_used(state.usage, 4)
    zeros = torch.zeros(2, 4, 3)
    new = lrua_step(state, torch.randn(2, 4, 3), zeros, alpha=torch.full((2, 4), -50.0), gamma=0.95)
    erased = (new.memory.abs().sum(-1) == 0)
    assert erased.sum(-1).tolist() == [1, 1] and erased[:, 7].all()


def test_lrua_rejects_mismatched_add_vectors():
    state = lrua_initial_state(1, 4, 3, heads=2)
    with pytest.raises(ValueError, match="add vectors"):
        lrua_step(state, torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 2), 0.95)


def test_lrua_weights_are_normalised_and_least_used_tracks_usage():
    g = torch.Generator().manual_seed(1)
    state = lrua_initial_state(2, 8, 5, heads=3)
    for _ in range(6):
        state = lrua_step(state, torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g),
                          torch.randn(2, 3, generator=g), 0.95, beta=torch.rand(2, 3, generator=g) * 5)
        assert torch.allclose(state.w_read.sum(-1), torch.ones(2, 3), atol=1e-5)
        smallest = torch.argsort(state.usage, dim=-1, stable=True)[:, :3]
        assert torch.equal(state.w_lu.argmax(-1), smallest)


def test_lrua_module_runs_batched_and_expands():
    mem = LRUA(hidden=6, slots=5, width=3, heads=2)
    state = mem.initial_state(1)
    state = mem(torch.randn(1, 6), state)
    big = state.expand(4)
    assert big.memory.shape == (4, 5, 3) and big.w_lu.shape == (4, 2, 5)
    assert mem(torch.randn(4, 6), big).read.shape == (4, 2, 3)


def test_ntm_runs_batched_and_its_weights_are_distributions():
    model = NTM(9, 8, hidden=16, slots=12, width=6)
    b = copy_batch(3, 4, generator=torch.Generator().manual_seed(0))
    y, wr, ww = model(b.inputs, return_weights=True)
    assert y.shape == (9, 3, 8) and wr.shape == ww.shape == (9, 3, 12)
    assert torch.allclose(wr.sum(-1), torch.ones(9, 3), atol=1e-5)
    assert torch.allclose(ww.sum(-1), torch.ones(9, 3), atol=1e-5)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ntm_rejects_unbatched_input():
    with pytest.raises(ValueError, match=r"\[T, B, input_size\]"):
        NTM(9, 8, hidden=8, slots=4, width=3)(torch.zeros(5, 9))


def test_copy_batch_layout_and_bits_wrong():
    b = copy_batch(2, 3, width=8, generator=torch.Generator().manual_seed(0))
    assert b.inputs.shape == (7, 2, 9) and b.targets.shape == (3, 2, 8)
    assert torch.equal(b.inputs[:3, :, :8], b.targets)
    assert b.inputs[3, :, 8].eq(1).all() and b.inputs[3, :, :8].eq(0).all()
    assert b.inputs[4:].eq(0).all() and b.inputs[:3, :, 8].eq(0).all()
    perfect = b.targets * 20 - 10  # logits with the right sign
    assert torch.equal(bits_wrong(perfect, b.targets), torch.zeros(2))
    assert torch.equal(bits_wrong(-perfect, b.targets), torch.full((2,), 24.0))
