"""PJM loader: the paper's split and features, loud failures on broken files, cached download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gridlearn.data import PJM_FILES, download_pjm, load_pjm, read_pjm_file
from gridlearn.errors import DataError


@pytest.mark.needs_data
def test_pjm_split_and_features_match_the_paper(shared_data):
    data = load_pjm(shared_data / "pjm")
    # 3191 target days: the paper's 3192 less 2016-09-28, which has 1 of its 24 hours and
    # is dropped rather than back-filled from that hour.
    assert data.x_train.shape == (2552, 149) and data.x_test.shape == (639, 149)
    assert data.y_train.shape == (2552, 24) and data.y_test.shape == (639, 24)
    assert (np.diff(data.days_train.astype(np.int64)) > 0).all()
    assert data.days_train[-1] < data.days_test[0]  # chronological, no overlap
    # standardised on the training split only
    np.testing.assert_allclose(data.x_train.mean(0), 0, atol=1e-9)
    # yesterday's loads are the previous target row (within one file)
    raw_prev = data.x_test[1:, :24] * data.x_train[:, :24].std(0) + 0  # rescale below
    mean, std = _train_stats(shared_data)
    np.testing.assert_allclose(data.x_test[1:, :24] * std[:24] + mean[:24], data.y_test[:-1], atol=1e-9)
    assert 0.9 < data.y_train.min() and data.y_train.max() < 3.2
    names = data.feature_names
    assert names[-5:] == ("weekend", "holiday", "dst", "cos_doy", "sin_doy")
    del raw_prev


def _train_stats(shared_data: Path):
    from gridlearn.data import pjm

    parts = [pjm._file_features(shared_data / "pjm" / n) for n in PJM_FILES]
    x = np.concatenate([p[0] for p in parts])[:2552]
    return x.mean(0), x.std(0)


def _write(tmp_path: Path, lines: list[str], end: str = "\n") -> Path:
    p = tmp_path / "pjm.txt"
    p.write_text("\n".join(lines) + end)
    return p


def _good_lines(n: int = 72) -> list[str]:
    t0 = 1199167200  # 2008-01-01 01:00 EST
    return [f"{t0 + 3600 * i:.8e} {1.5 + 0.01 * i:.6e} {30.0:.6e}" for i in range(n)]


def test_malformed_line_raises_data_error_naming_it(tmp_path):
    lines = _good_lines()
    lines[9] = "1.19920320e+09 abc 3.0e+01"
    with pytest.raises(DataError, match="line 10: not a number"):
        read_pjm_file(_write(tmp_path, lines))
    lines[9] = "1.19920320e+09 1.5"
    with pytest.raises(DataError, match="line 10: expected 3 columns"):
        read_pjm_file(_write(tmp_path, lines))


def test_truncated_file_raises_data_error_naming_the_last_line(tmp_path):
    lines = _good_lines()
    lines[-1] = lines[-1][:20]
    with pytest.raises(DataError, match=f"line {len(lines)}"):
        read_pjm_file(_write(tmp_path, lines, end=""))


def test_good_file_parses(tmp_path):
    a = read_pjm_file(_write(tmp_path, _good_lines()))
    assert a.shape == (72, 3) and a[3, 1] == pytest.approx(1.53)


def test_download_uses_the_public_source_and_caches(tmp_path):
    src = {n: ("\n".join(_good_lines()) + "\n").encode() for n in PJM_FILES}
    calls = []

    def fake_fetch(url: str) -> bytes:
        calls.append(url)
        return src[url.rsplit("/", 1)[1]]

    download_pjm(tmp_path, fetch=fake_fetch)
    assert sorted(calls) == sorted(
        f"https://raw.githubusercontent.com/locuslab/e2e-model-learning/2bf4384/power_sched/{n}" for n in PJM_FILES
    )
    assert all((tmp_path / n).exists() for n in PJM_FILES)
    download_pjm(tmp_path, fetch=fake_fetch)
    assert len(calls) == 2  # cached: no second fetch


def test_truncated_download_is_not_cached(tmp_path):
    def fake_fetch(url: str) -> bytes:
        return ("\n".join(_good_lines()) + "\n").encode()[:-30]

    with pytest.raises(DataError, match="truncated"):
        download_pjm(tmp_path, fetch=fake_fetch)
    assert not any(tmp_path.iterdir())


def test_missing_directory_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="GRIDLEARN_DATA_DIR"):
        load_pjm(tmp_path / "nowhere")


def _two_files(tmp_path: Path, lines: list[str]) -> Path:
    for k, name in enumerate(PJM_FILES):
        shift = k * 86400 * 40
        out = []
        for ln in lines:
            t, v, temp = ln.split()
            out.append(f"{float(t) + shift:.8e} {v} {temp}")
        (tmp_path / name).write_text("\n".join(out) + "\n")
    return tmp_path


def _days(n: int) -> list[str]:
    t0 = 1199163600  # 2008-01-01 00:00 EST
    return [f"{t0 + 3600 * i:.8e} {1.0 + (i // 24) + 0.01 * (i % 24):.6e} {30.0:.6e}" for i in range(24 * n)]


def test_a_missing_calendar_day_drops_the_day_after_instead_of_misaligning_it(tmp_path):
    from gridlearn.data import pjm

    lines = _days(10)
    del lines[24 * 4:24 * 5]  # day 4 missing entirely
    x, y, dates, _ = pjm._file_features(_two_files(tmp_path, lines) / PJM_FILES[0])
    kept = [str(d) for d in dates]
    assert "2008-01-05" not in kept and "2008-01-06" not in kept  # day 4 and the day after it
    for i in range(1, len(dates)):
        if (dates[i] - dates[i - 1]).astype(int) == 1:
            np.testing.assert_allclose(x[i, :24], y[i - 1])  # "yesterday" is the previous day
    # Day 5's own "yesterday" would have been day 3 (two days earlier): it is gone.
    assert not any(np.allclose(x[i, :24], 4.0 + 0.01 * np.arange(24)) for i in range(len(dates)))


def test_a_day_with_23_hours_missing_is_dropped_not_back_filled(tmp_path):
    from gridlearn.data import pjm

    lines = _days(10)
    del lines[24 * 6 + 1:24 * 7]  # day 6 keeps one hour
    x, y, dates, _ = pjm._file_features(_two_files(tmp_path, lines) / PJM_FILES[0])
    kept = [str(d) for d in dates]
    assert "2008-01-07" not in kept and "2008-01-08" not in kept
    assert not any(np.ptp(row) == 0 for row in y)  # no day flattened to one value


def test_absurd_values_are_rejected_naming_the_line(tmp_path):
    lines = _good_lines()
    lines[5] = lines[5].split()[0] + " 1e30 3.0e+01"
    with pytest.raises(DataError, match="line 6: load 1e\\+30 is outside"):
        read_pjm_file(_write(tmp_path, lines))
    lines = _good_lines()
    lines[7] = lines[7].split()[0] + " 1.5 -400"
    with pytest.raises(DataError, match="line 8: temperature"):
        read_pjm_file(_write(tmp_path, lines))
