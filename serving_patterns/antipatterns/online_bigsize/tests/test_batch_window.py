"""The batch-window arithmetic: n items x latency against the window."""

import pytest

from serving_patterns.antipatterns.online_bigsize.batch_window import batch_verdict, main


def test_batch_verdict_compares_items_times_latency_with_the_window() -> None:
    six_hours = 6 * 3600

    big = batch_verdict(10_000_000, 0.150, six_hours)
    small = batch_verdict(10_000_000, 0.0012, six_hours)
    exact = batch_verdict(21_600, 1.0, six_hours)

    assert big.hours == pytest.approx(416.67, abs=0.01)
    assert not big.fits
    assert big.processes == 70  # 416.7 h / 6 h, rounded up
    assert small.hours == pytest.approx(3.33, abs=0.01)
    assert small.fits and small.processes == 1
    assert exact.fits and exact.processes == 1  # the whole window, not a second over


def test_batch_window_prints_each_models_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--items", "1000", "--window-hours", "1", "slow=7200", "fast=1"])

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "1,000 items in a 1 h window:",
        "  slow: 1,000 x 7200 ms = 2.0 h on one process, misses it; 2 process(es) to fit",
        "  fast: 1,000 x 1 ms = 0.0 h on one process, fits; 1 process(es) to fit",
    ]
