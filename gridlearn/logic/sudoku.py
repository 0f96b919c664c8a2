"""Sudoku: an exact solver, a unique-solution puzzle generator, SATNet's one-hot encoding,
and boards rendered from sklearn's 8x8 digit images ("visual Sudoku").

Boards are integer arrays ``(D, D)`` (or batches ``(P, D, D)``) with ``D = box**2``
(9 for ordinary Sudoku, 4 for the 2x2-box version used in fast tests); 0 is a blank.

Encoding (SATNet paper, Sec. 4.2): a board is ``D**3`` bits, bit ``(r*D + c)*D + (d-1)``
is 1 iff cell (r, c) holds digit d; the bits of a given cell are the layer's inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridlearn.errors import DataError

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- solver


def _check_board(board: np.ndarray) -> tuple[np.ndarray, int, int]:
    board = np.asarray(board)
    if board.ndim != 2 or board.shape[0] != board.shape[1]:
        raise ValueError(f"board must be a square 2-d array, got shape {board.shape}")
    D = board.shape[0]
    box = int(round(D**0.5))
    if box * box != D:
        raise ValueError(f"board side must be a square number (4, 9, ...), got {D}")
    if board.min() < 0 or board.max() > D:
        raise ValueError(f"board entries must be in 0..{D} (0 = blank)")
    return board.astype(np.int64), D, box


def solve_sudoku(board: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Up to ``limit`` solutions of ``board`` (D, D), by backtracking with bitmask candidates
    and the most-constrained-cell-first rule. ``rng`` randomises the digit order (used to
    draw random full grids). A board whose givens already conflict has no solutions.

    A 4x4 board (box 2) with two givens has more than one solution; a full one has itself:

    >>> import numpy as np
    >>> board = np.zeros((4, 4), dtype=np.int64); board[0, :2] = [1, 2]
    >>> len(solve_sudoku(board, limit=2)), is_valid_solution(solve_sudoku(board, limit=1)[0])
    (2, True)
    """
    board, D, box = _check_board(board)
    full = (1 << D) - 1
    rows = [0] * D
    cols = [0] * D
    boxes = [0] * D
    grid = board.flatten().tolist()
    for idx, d in enumerate(grid):
        if d:
            r, c = divmod(idx, D)
            b = (r // box) * box + c // box
            bit = 1 << (d - 1)
            if rows[r] & bit or cols[c] & bit or boxes[b] & bit:
                return []
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    blanks = [i for i, d in enumerate(grid) if not d]
    cell_rcb = [(i // D, i % D, ((i // D) // box) * box + (i % D) // box) for i in range(D * D)]
    solutions: list[np.ndarray] = []

    def search() -> bool:
        # pick the blank with fewest candidates
        best, best_cands, best_n = -1, 0, D + 1
        for i in blanks:
            if grid[i]:
                continue
            r, c, b = cell_rcb[i]
            cands = full & ~(rows[r] | cols[c] | boxes[b])
            nc = cands.bit_count()
            if nc < best_n:
                best, best_cands, best_n = i, cands, nc
                if nc <= 1:
                    break
        if best < 0:
            solutions.append(np.array(grid, dtype=np.int64).reshape(D, D))
            return len(solutions) >= limit
        if best_n == 0:
            return False
        r, c, b = cell_rcb[best]
        digits = [d for d in range(1, D + 1) if best_cands >> (d - 1) & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            bit = 1 << (d - 1)
            grid[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            stop = search()
            rows[r] &= ~bit
            cols[c] &= ~bit
            boxes[b] &= ~bit
            grid[best] = 0
            if stop:
                return True
        return False

    search()
    return solutions


def is_valid_solution(board: np.ndarray) -> bool:
    """True iff ``board`` is completely filled and every row, column and box holds 1..D.

    >>> import numpy as np
    >>> good = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    >>> bad = good.copy(); bad[0, :2] = [2, 1]       # row 0 still holds 1..4, column 0 has two 2s
    >>> is_valid_solution(good), is_valid_solution(bad)
    (True, False)
    """
    board, D, box = _check_board(board)
    want = set(range(1, D + 1))
    for i in range(D):
        if set(board[i].tolist()) != want or set(board[:, i].tolist()) != want:
            return False
    for br in range(box):
        for bc in range(box):
            if set(board[br * box : (br + 1) * box, bc * box : (bc + 1) * box].flatten().tolist()) != want:
                return False
    return True


# --------------------------------------------------------------------------- generator


def generate_puzzle(
    rng: np.random.Generator, box: int = 3, givens: int = 36
) -> tuple[np.ndarray, np.ndarray]:
    """A random puzzle with a unique solution and about ``givens`` given cells.

    Draw a random full grid, blank all but ``givens`` random cells, then, while a second
    solution exists, reveal a cell where that solution differs from ours (so the puzzle
    may end with a few more givens than asked). Returns (puzzle, solution), both (D, D).

    >>> import numpy as np
    >>> puzzle, solution = generate_puzzle(np.random.default_rng(0), box=2, givens=6)
    >>> len(solve_sudoku(puzzle, limit=2)), is_valid_solution(solution), bool(((puzzle == 0) | (puzzle == solution)).all())
    (1, True, True)
    """
    D = box * box
    if not 0 < givens <= D * D:
        raise ValueError(f"givens must be in 1..{D * D}, got {givens}")
    solution = solve_sudoku(np.zeros((D, D), dtype=np.int64), limit=1, rng=rng)[0]
    keep = np.zeros(D * D, dtype=bool)
    keep[rng.permutation(D * D)[:givens]] = True
    puzzle = np.where(keep.reshape(D, D), solution, 0)
    while True:
        sols = solve_sudoku(puzzle, limit=2)
        other = [s for s in sols if not np.array_equal(s, solution)]
        if not other:
            return puzzle, solution
        diff = np.argwhere(other[0] != solution)
        r, c = diff[rng.integers(len(diff))]
        puzzle[r, c] = solution[r, c]


@dataclass(frozen=True)
class SudokuSet:
    """Puzzles and solutions, ``(P, D, D)`` int8 arrays (0 = blank in ``puzzles``).

    >>> data = generate_dataset(5, seed=0, box=2, givens_range=(6, 8))
    >>> train, test = data.split(3)
    >>> len(data), len(train), len(test), data.puzzles.dtype.name, bool((test.solutions == data.solutions[3:]).all())
    (5, 3, 2, 'int8', True)
    """

    puzzles: np.ndarray
    solutions: np.ndarray

    def __len__(self) -> int:
        return len(self.puzzles)

    def split(self, n_first: int) -> tuple["SudokuSet", "SudokuSet"]:
        return (
            SudokuSet(self.puzzles[:n_first], self.solutions[:n_first]),
            SudokuSet(self.puzzles[n_first:], self.solutions[n_first:]),
        )


def generate_dataset(
    n_puzzles: int,
    seed: int,
    box: int = 3,
    givens_range: tuple[int, int] = (26, 40),
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> SudokuSet:
    """``n_puzzles`` unique-solution puzzles, givens drawn uniformly from ``givens_range``
    (inclusive; the default averages about 36, like the SATNet paper's data set).

    With ``cache_dir``, the set is stored as ``sudoku-<hash>.npz`` keyed by all arguments
    and read back on the next call (generating 10k 9x9 puzzles takes minutes).

    Four 4x4 puzzles starting from 6 to 8 givens (`generate_puzzle` reveals more until the
    solution is unique: the first ends with 9), each with exactly one solution; the cache
    returns the same set:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     data = generate_dataset(4, seed=0, box=2, givens_range=(6, 8), cache_dir=tmp)
    ...     again = generate_dataset(4, seed=0, box=2, givens_range=(6, 8), cache_dir=tmp)
    >>> data.puzzles.shape, [int((p > 0).sum()) for p in data.puzzles], bool((again.puzzles == data.puzzles).all())
    ((4, 4, 4), [9, 8, 8, 6], True)
    >>> all(len(solve_sudoku(p, limit=2)) == 1 and is_valid_solution(s) for p, s in zip(data.puzzles, data.solutions))
    True
    """
    lo, hi = givens_range
    if n_puzzles < 1:
        raise ValueError(f"n_puzzles must be >= 1, got {n_puzzles}")
    key = json.dumps({"n": n_puzzles, "seed": seed, "box": box, "givens": [lo, hi], "v": 1}, sort_keys=True)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"sudoku-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
        if path.exists():
            with np.load(path) as f:
                if str(f["key"]) != key:
                    raise DataError(f"{path} holds a different data set ({f['key']}); delete it")
                return SudokuSet(f["puzzles"], f["solutions"])
    rng = np.random.default_rng(seed)
    D = box * box
    puzzles = np.zeros((n_puzzles, D, D), dtype=np.int8)
    solutions = np.zeros((n_puzzles, D, D), dtype=np.int8)
    it = range(n_puzzles)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="generating sudoku", unit="puzzle")
    t0 = time.perf_counter()
    for i in it:
        puzzles[i], solutions[i] = generate_puzzle(rng, box, int(rng.integers(lo, hi + 1)))
    logger.info("generated %d %dx%d puzzles in %.1f s", n_puzzles, D, D, time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, puzzles=puzzles, solutions=solutions, key=np.array(key))
        tmp.replace(path)
    return SudokuSet(puzzles, solutions)


# --------------------------------------------------------------------------- encoding


def one_hot(boards: np.ndarray) -> np.ndarray:
    """(P, D, D) boards -> (P, D**3) float32 bits; blanks are all-zero cells.

    `decode` inverts it on full boards; `input_mask` marks the given cells' bits:

    >>> import numpy as np
    >>> boards = np.array([[[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]])
    >>> bits = one_hot(boards)
    >>> bits.shape, bits[0, :4].tolist(), bool((decode(bits, D=4) == boards).all())
    ((1, 64), [1.0, 0.0, 0.0, 0.0], True)
    """
    boards = np.asarray(boards, dtype=np.int64)
    P, D, _ = boards.shape
    out = np.zeros((P, D * D, D), dtype=np.float32)
    flat = boards.reshape(P, D * D)
    p, cell = np.nonzero(flat)
    out[p, cell, flat[p, cell] - 1] = 1.0
    return out.reshape(P, D**3)


def input_mask(puzzles: np.ndarray) -> np.ndarray:
    """(P, D, D) puzzles -> (P, D**3) bool: the D bits of every given cell.

    >>> import numpy as np
    >>> puzzle = np.zeros((1, 4, 4), dtype=np.int64); puzzle[0, 0, 0] = 3
    >>> mask = input_mask(puzzle)
    >>> int(mask.sum()), mask[0, :5].tolist()   # the 4 bits of cell (0, 0)
    (4, [True, True, True, True, False])
    """
    puzzles = np.asarray(puzzles)
    P, D, _ = puzzles.shape
    return np.repeat(puzzles.reshape(P, D * D) != 0, D, axis=1)


def decode(bits: np.ndarray, D: int = 9) -> np.ndarray:
    """(P, D**3) relaxed bits -> (P, D, D) boards, the most likely digit per cell.

    >>> import numpy as np
    >>> bits = np.full((1, 64), 0.1); bits[0, 2] = 0.7    # cell (0, 0) leans to digit 3
    >>> decode(bits, D=4)[0, 0].tolist()
    [3, 1, 1, 1]
    """
    bits = np.asarray(bits)
    return bits.reshape(len(bits), D, D, D).argmax(axis=3) + 1


# --------------------------------------------------------------------------- visual sudoku


def digit_images(seed: int, test_fraction: float = 0.3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sklearn ``load_digits`` (1797 8x8 images, values 0..16), scaled to [0, 1] and split
    at random into ``{"train": (images, labels), "test": (images, labels)}``.

    >>> digits = digit_images(seed=0)
    >>> images, labels = digits["train"]
    >>> images.shape, len(digits["test"][1]), float(images.max()), sorted(set(labels.tolist())) == list(range(10))
    ((1258, 8, 8), 539, 1.0, True)
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test, train = perm[:n_test], perm[n_test:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def render_boards(
    puzzles: np.ndarray, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(P, D, D) puzzles -> (P, D*D, 8, 8) images: each cell a random image of its digit,
    blanks an image of a 0 (as the SATNet paper does with MNIST).

    >>> import numpy as np
    >>> images, labels = digit_images(seed=0)["train"]
    >>> puzzle = np.zeros((1, 4, 4), dtype=np.int64); puzzle[0, 0, :2] = [3, 1]
    >>> boards = render_boards(puzzle, images, labels, np.random.default_rng(0))
    >>> boards.shape, [int(labels[int(np.flatnonzero((images == boards[0, c]).all(axis=(1, 2)))[0])]) for c in range(3)]
    ((1, 16, 8, 8), [3, 1, 0])
    """
    puzzles = np.asarray(puzzles, dtype=np.int64)
    P, D, _ = puzzles.shape
    if puzzles.max() > 9:
        raise ValueError("visual boards need digits 0..9")
    by_digit = [np.flatnonzero(labels == d) for d in range(10)]
    flat = puzzles.reshape(-1)
    pick = np.empty(flat.shape, dtype=np.int64)
    for d in range(10):
        where = np.flatnonzero(flat == d)
        if len(where):
            if not len(by_digit[d]):
                raise DataError(f"no image of digit {d} to render with")
            pick[where] = by_digit[d][rng.integers(len(by_digit[d]), size=len(where))]
    return images[pick].reshape(P, D * D, *images.shape[1:])


__all__ = [
    "solve_sudoku",
    "is_valid_solution",
    "generate_puzzle",
    "generate_dataset",
    "SudokuSet",
    "one_hot",
    "input_mask",
    "decode",
    "digit_images",
    "render_boards",
]
