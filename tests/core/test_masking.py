"""Masking strategies: exact counts, grid-rank checks, ratio validation, determinism, index bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maezoo
from maezoo.core.masking import (
    BlockMasking,
    CoarseMasking,
    GridMasking,
    Mask,
    NodeMasking,
    RandomMasking,
    TimeFrequencyMasking,
    TubeMasking,
    apply_drop,
    apply_replace,
    unshuffle,
)

B = 5

# (strategy, grid, ratio): every grid is one the strategy accepts and makes ``N * ratio`` an integer.
RATIO_CASES = [
    *[(RandomMasking(r), g, r) for g in [(16,), (4, 4), (2, 4, 4), (3, 8)] for r in (0.0, 0.25, 0.5, 0.75)],
    (RandomMasking(0.9), (10, 10), 0.9),
    *[(NodeMasking(r), (20,), r) for r in (0.0, 0.25, 0.5, 0.75, 0.95)],
    *[(BlockMasking(r), g, r) for g in [(8, 8), (4, 16)] for r in (0.0, 0.25, 0.5, 0.75)],
    (BlockMasking(0.25, min_block=4), (4, 4), 0.25),
    *[(CoarseMasking(r, scale=2), (8, 8), r) for r in (0.0, 0.25, 0.5, 0.75)],
    (CoarseMasking(0.5, scale=2), (4,), 0.5),
    (CoarseMasking(0.75, scale=2), (2, 4, 4), 0.75),
    *[(TubeMasking(r), (3, 4, 4), r) for r in (0.0, 0.25, 0.5, 0.75)],
    (GridMasking(2), (4, 4), 0.75),
    (GridMasking(2), (8,), 0.5),
    (GridMasking(2), (2, 4, 4), 0.875),
    (GridMasking(4), (8, 8), 15 / 16),
    (TimeFrequencyMasking(0.5, 0.25), (10, 8), (5 * 8 + 2 * 10 - 5 * 2) / 80),
    (TimeFrequencyMasking(0.0, 0.0), (6, 4), 0.0),
    (TimeFrequencyMasking(0.6, 0.0), (10, 4), 0.6),
]


@pytest.mark.parametrize("strategy,grid,ratio", RATIO_CASES, ids=lambda v: repr(v) if not isinstance(v, float) else None)
def test_kept_fraction_is_one_minus_ratio(strategy, grid, ratio):
    n = math.prod(grid)
    mask = strategy(B, grid, generator=torch.Generator().manual_seed(1))
    assert mask.mask.shape == (B, n) and mask.mask.dtype == torch.bool
    kept = (~mask.mask).sum(1)
    expected_keep = round(n * (1 - ratio))
    assert kept.tolist() == [expected_keep] * B, f"{strategy} on {grid}: kept {kept.tolist()}, want {expected_keep}"
    assert mask.num_visible == expected_keep
    assert mask.ids_keep.shape == (B, expected_keep)
    assert mask.ids_masked.shape == (B, n - expected_keep)
    assert mask.num_visible / n == pytest.approx(1 - ratio)
    assert strategy.ratio == pytest.approx(ratio)


@pytest.mark.parametrize("strategy,grid,ratio", RATIO_CASES[::3], ids=lambda v: repr(v) if not isinstance(v, float) else None)
def test_mask_indices_are_consistent(strategy, grid, ratio):
    n = math.prod(grid)
    m = strategy(B, grid, generator=torch.Generator().manual_seed(2))
    # ids_keep / ids_masked ascending, disjoint, covering, and agreeing with the bool mask
    assert torch.all(m.ids_keep[:, 1:] > m.ids_keep[:, :-1])
    assert torch.all(m.ids_masked[:, 1:] > m.ids_masked[:, :-1])
    assert not m.mask.gather(1, m.ids_keep).any()
    assert m.mask.gather(1, m.ids_masked).all()
    both = torch.cat([m.ids_keep, m.ids_masked], 1).sort(1).values
    assert torch.equal(both, torch.arange(n).expand(B, n))
    # ids_restore puts cat(visible, masked) back into grid order
    x = torch.randn(B, n, 3)
    shuffled = torch.cat([apply_drop(x, m), torch.gather(x, 1, m.ids_masked[..., None].expand(-1, -1, 3))], 1)
    assert torch.equal(torch.gather(shuffled, 1, m.ids_restore[..., None].expand(-1, -1, 3)), x)


def test_unshuffle_inverts_drop_and_fills_hidden():
    m = RandomMasking(0.5)(3, (4, 4), generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 16, 6)
    fill = torch.full((6,), -7.0)
    y = unshuffle(apply_drop(x, m), m, fill)
    assert torch.equal(y[~m.mask], x[~m.mask])
    assert torch.all(y[m.mask] == -7.0)
    r = apply_replace(x, m, fill)
    assert torch.equal(r, y)
    # an [N, D] mask token (mask token + position) broadcasts per position
    per_pos = torch.arange(16.0)[:, None].expand(16, 6)
    r2 = apply_replace(x, m, per_pos)
    assert torch.equal(r2[m.mask], per_pos.expand(3, 16, 6)[m.mask])


def test_every_sample_has_same_visible_count_and_differs():
    m = RandomMasking(0.75)(16, (8, 8), generator=torch.Generator().manual_seed(3))
    assert set((~m.mask).sum(1).tolist()) == {16}
    assert len({tuple(r.tolist()) for r in m.mask}) > 1, "samples in a batch must get independent masks"


def test_structure_of_structured_strategies():
    g = torch.Generator().manual_seed(0)
    # tube: same spatial mask at every time step
    t = TubeMasking(0.5)(4, (3, 4, 4), generator=g).mask.view(4, 3, 16)
    assert torch.equal(t, t[:, :1].expand_as(t))
    # coarse: constant over each scale x scale cell
    c = CoarseMasking(0.5, scale=2)(4, (8, 8), generator=g).mask.view(4, 4, 2, 4, 2)
    assert torch.equal(c, c[:, :, :1, :, :1].expand_as(c))
    # grid: exactly one visible token per 2 x 2 cell
    gm = GridMasking(2)(4, (4, 6), generator=g).mask.view(4, 2, 2, 3, 2)
    assert torch.equal((~gm).sum((2, 4)), torch.ones(4, 2, 3, dtype=torch.long))
    # time-frequency: whole time columns and frequency rows
    tf = TimeFrequencyMasking(0.5, 0.25)(4, (10, 8), generator=g).mask.view(4, 10, 8)
    full_t = tf.all(2).sum(1)
    full_f = tf.all(1).sum(1)
    assert (full_t >= 5).all() and (full_f >= 2).all()
    # block: at least one rectangle of >= 2x2 tokens hidden at ratio 0.5 on 8x8 (min_block=16)
    bm = BlockMasking(0.5)(4, (8, 8), generator=g).mask.view(4, 8, 8)
    windows = bm.unfold(1, 2, 1).unfold(2, 2, 1).all(-1).all(-1)
    assert windows.flatten(1).any(1).all()


WRONG_RANK = [
    (NodeMasking(0.5), (4, 4)),
    (BlockMasking(0.5), (16,)),
    (BlockMasking(0.5), (2, 4, 4)),
    (TubeMasking(0.5), (4, 4)),
    (TimeFrequencyMasking(), (2, 4, 4)),
    (TimeFrequencyMasking(), (16,)),
    (GridMasking(2), (2, 2, 2, 2)),
    (CoarseMasking(0.5), (2, 2, 2, 2)),
]


@pytest.mark.parametrize("strategy,grid", WRONG_RANK, ids=repr)
def test_wrong_grid_rank_is_a_clear_value_error(strategy, grid):
    with pytest.raises(ValueError, match=r"rank"):
        strategy(2, grid)


@pytest.mark.parametrize(
    "strategy,grid",
    [(GridMasking(2), (3, 4)), (CoarseMasking(0.5, scale=2), (5, 4)), (RandomMasking(0.5), (0, 4)), (RandomMasking(0.5), ())],
    ids=repr,
)
def test_grid_size_errors(strategy, grid):
    with pytest.raises(ValueError):
        strategy(2, grid)


RATIO_FACTORIES = {
    "random": lambda r: RandomMasking(r),
    "node": lambda r: NodeMasking(r),
    "block": lambda r: BlockMasking(r),
    "coarse": lambda r: CoarseMasking(r),
    "tube": lambda r: TubeMasking(r),
    "time": lambda r: TimeFrequencyMasking(time_ratio=r),
    "freq": lambda r: TimeFrequencyMasking(freq_ratio=r),
    "registry": lambda r: maezoo.create("masking", "random", ratio=r),
}


@pytest.mark.parametrize("name", sorted(RATIO_FACTORIES))
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", None, True])
def test_bad_ratio_rejected(name, bad):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        RATIO_FACTORIES[name](bad)


def test_bad_grid_cell_and_scale_rejected():
    with pytest.raises(ValueError):
        GridMasking(1)
    with pytest.raises(ValueError):
        CoarseMasking(0.5, scale=0)


def test_numpy_ratio_accepted():
    assert RandomMasking(np.float32(0.5)).ratio == 0.5


@pytest.mark.parametrize("ratio,n,masked", [(0.29, 100, 29), (0.57, 100, 57), (0.7, 10, 7), (0.75, 196, 147), (0.9, 10, 9)])
def test_counts_robust_to_float_error(ratio, n, masked):
    # int(100 * 0.29) == 28 in floating point; the strategy must hide 29
    m = RandomMasking(ratio)(2, (n,))
    assert m.mask.sum(1).tolist() == [masked, masked]


@settings(max_examples=40, deadline=None)
@given(
    grid=st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
    ratio=st.floats(0.0, 0.99, allow_nan=False),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_random_masking_count_property(grid, ratio, batch, seed):
    n = math.prod(grid)
    m = RandomMasking(ratio)(batch, grid, generator=torch.Generator().manual_seed(seed))
    expect = math.floor(n * ratio + 1e-9)
    assert m.mask.sum(1).tolist() == [expect] * batch
    assert m.num_visible == n - expect >= 1


ALL_STRATEGIES = [
    (RandomMasking(0.75), (8, 8)), (NodeMasking(0.5), (30,)), (BlockMasking(0.4), (8, 8)), (GridMasking(2), (8, 8)),
    (CoarseMasking(0.5), (8, 8)), (TubeMasking(0.75), (2, 4, 4)), (TimeFrequencyMasking(0.5, 0.5), (8, 8)),
]


@pytest.mark.parametrize("strategy,grid", ALL_STRATEGIES, ids=repr)
def test_deterministic_under_generator(strategy, grid):
    a = strategy(4, grid, generator=torch.Generator().manual_seed(123)).mask
    b = strategy(4, grid, generator=torch.Generator().manual_seed(123)).mask
    assert torch.equal(a, b)
    others = [strategy(4, grid, generator=torch.Generator().manual_seed(s)).mask for s in range(1, 6)]
    assert any(not torch.equal(a, o) for o in others), "different seeds must give different masks"


def test_mask_from_bool_validation():
    with pytest.raises(ValueError, match="same number"):
        Mask.from_bool(torch.tensor([[True, False], [True, True]]))
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        Mask.from_bool(torch.zeros(4, dtype=torch.bool))
    none = Mask.none(3, 5)
    assert none.num_visible == 5 and not none.mask.any() and none.ids_masked.shape == (3, 0)


def test_registry_lists_strategies():
    assert {"random", "node", "block", "grid", "coarse", "tube", "time_frequency"} <= set(maezoo.list_maskings())
