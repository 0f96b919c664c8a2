"""Sudoku solver, generator (unique solutions), encoding, rendering; a short SATNet fit on 4x4."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.logic.sudoku import (
    decode,
    digit_images,
    generate_dataset,
    generate_puzzle,
    input_mask,
    is_valid_solution,
    one_hot,
    render_boards,
    solve_sudoku,
)


def test_generated_puzzles_have_unique_valid_solutions(tmp_path):
    ds = generate_dataset(12, seed=0, cache_dir=tmp_path)
    givens = (ds.puzzles != 0).sum(axis=(1, 2))
    assert givens.min() >= 26 and givens.max() <= 81
    for puzzle, solution in zip(ds.puzzles, ds.solutions):
        assert is_valid_solution(solution)
        assert np.array_equal(np.where(puzzle != 0, solution, 0), puzzle)  # givens agree
        sols = solve_sudoku(puzzle, limit=2)
        assert len(sols) == 1 and np.array_equal(sols[0], solution)
    # the cache returns the same set, and a different seed gives a different one
    again = generate_dataset(12, seed=0, cache_dir=tmp_path)
    assert np.array_equal(again.puzzles, ds.puzzles) and len(list(tmp_path.glob("*.npz"))) == 1
    assert not np.array_equal(generate_dataset(12, seed=1).puzzles, ds.puzzles)


def test_solver_detects_multiple_and_no_solutions():
    assert len(solve_sudoku(np.zeros((4, 4), dtype=int), limit=2)) == 2
    bad = np.zeros((9, 9), dtype=int)
    bad[0, 0] = bad[0, 5] = 7  # same digit twice in a row
    assert solve_sudoku(bad) == []
    with pytest.raises(ValueError, match="square"):
        solve_sudoku(np.zeros((5, 5), dtype=int))
    with pytest.raises(ValueError, match="entries"):
        solve_sudoku(np.full((4, 4), 7))


def test_encoding_round_trip():
    puzzle, solution = generate_puzzle(np.random.default_rng(3), box=3, givens=36)
    bits = one_hot(solution[None])
    assert bits.shape == (1, 729) and bits.sum() == 81
    assert np.array_equal(decode(bits)[0], solution)
    mask = input_mask(puzzle[None])
    assert mask.sum() == 9 * (puzzle != 0).sum()
    assert np.array_equal(one_hot(puzzle[None])[mask], bits[mask])


def test_render_boards_uses_images_of_the_right_digit():
    split = digit_images(seed=0)
    images, labels = split["train"]
    puzzle, _ = generate_puzzle(np.random.default_rng(1), box=3, givens=30)
    rendered = render_boards(puzzle[None], images, labels, np.random.default_rng(0))
    assert rendered.shape == (1, 81, 8, 8)
    # every rendered cell is one of the images carrying that cell's digit (0 for blanks)
    flat = images.reshape(len(images), -1)
    for cell, digit in enumerate(puzzle.reshape(-1)):
        match = np.flatnonzero((flat == rendered[0, cell].reshape(-1)).all(axis=1))
        assert len(match) and set(labels[match]) == {digit}


def test_satnet_loss_decreases_on_4x4_sudoku():
    from gridlearn.implicit import SATNet

    ds = generate_dataset(16, seed=0, box=2, givens_range=(6, 8))
    z = torch.from_numpy(one_hot(ds.puzzles))
    y = torch.from_numpy(one_hot(ds.solutions))
    mask = torch.from_numpy(input_mask(ds.puzzles))
    net = SATNet(64, 40, aux=10, max_iter=20, seed=0, generator=torch.Generator().manual_seed(0), on_failure="keep")
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(10):
        out = net(z, mask)
        loss = torch.nn.functional.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6)[~mask], y[~mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
