"""Progress of long work (tasks/progress.py): rate-limited artifact updates, the terminal bar,
silence elsewhere, and the trainers' log lines at a bounded rate. A real flow run's artifact:
tests/flows/test_progress_flow.py."""

from __future__ import annotations

import logging
import re

import dask
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from tasks import progress as progress_module
from tasks.data import dask_progress
from tasks.progress import Progress, progress
from tasks.training import torch_trainer
from tasks.training.lightgbm_trainer import LightGBMParams, RoundReport, train_lightgbm
from tasks.training.training_set import time_split

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sent:
    """Stands in for the run's progress artifact: what would have been sent."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.id = "sent"

    def update(self, percent: float) -> None:
        self.values.append(percent)


@pytest.fixture
def in_a_run(monkeypatch: pytest.MonkeyPatch) -> Sent:
    sent = Sent()
    monkeypatch.setattr(progress_module, "in_run", lambda: True)
    monkeypatch.setattr(progress_module._Artifact, "create", classmethod(lambda cls, d, k: sent))
    monkeypatch.setenv(progress_module.ENV, "0")
    return sent


def test_10000_advances_send_a_bounded_number_of_updates(in_a_run: Sent) -> None:
    clock = Clock()
    with Progress("rounds", 10_000, clock=clock) as bar:
        for _ in range(10_000):
            clock.now += 0.01  # 100 s of work
            bar.advance()
    assert 90 <= len(in_a_run.values) <= 101  # about one a second, one per whole percent
    assert in_a_run.values == sorted(in_a_run.values) and in_a_run.values[-1] == 100.0
    assert bar.updates == len(in_a_run.values)


def test_fast_work_sends_only_its_end(in_a_run: Sent) -> None:
    clock = Clock()
    with Progress("rounds", 10_000, clock=clock) as bar:
        for _ in range(10_000):
            clock.now += 1e-5
            bar.advance()
    assert in_a_run.values == [100.0]


def test_slow_work_sends_each_whole_percent_at_most_once(in_a_run: Sent) -> None:
    clock = Clock()
    with Progress("files", 1_000, clock=clock) as bar:
        for _ in range(1_000):
            clock.now += 60.0
            bar.advance()
    assert len(in_a_run.values) == 100 and len(set(in_a_run.values)) == 100


def test_early_end_reads_100_and_a_failure_keeps_the_last_value(in_a_run: Sent) -> None:
    clock = Clock()
    with Progress("rounds", 1_000, clock=clock) as bar:  # early stopping at round 300
        clock.now += 10
        bar.update(300)
    assert in_a_run.values == [30.0, 100.0]
    in_a_run.values.clear()
    with pytest.raises(RuntimeError), Progress("rounds", 1_000, clock=clock) as bar:
        clock.now += 10
        bar.update(400)
        raise RuntimeError("stopped")
    assert in_a_run.values == [40.0]


def test_outside_a_run_and_a_terminal_it_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_artifact(*_: object) -> None:
        raise AssertionError("no artifact outside a run")

    monkeypatch.setattr(progress_module._Artifact, "create", classmethod(no_artifact))
    monkeypatch.delenv(progress_module.ENV, raising=False)  # pytest's stderr is no TTY
    assert not progress_module.in_run() and not progress_module.show_bar()
    with progress("silent", 100_000) as bar:
        for _ in range(100_000):
            bar.advance()
    assert bar._artifact is None and bar._task is None and bar.updates == 0
    assert progress_module._Display._rich is None


def test_failing_artifact_calls_never_fail_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.artifacts

    calls: list[str] = []

    def create(*_: object, **__: object) -> str:
        calls.append("create")
        return "0b7ab3b4-5cb4-4c33-9d2c-3e3cf1a3e6a4"

    def update(*_: object, **__: object) -> None:
        calls.append("update")
        raise ConnectionError("no API")

    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", create)
    monkeypatch.setattr(prefect.artifacts, "update_progress_artifact", update)
    monkeypatch.setattr(progress_module, "in_run", lambda: True)
    monkeypatch.setenv(progress_module.ENV, "0")
    clock = Clock()
    with Progress("work", 100, clock=clock) as bar:
        for _ in range(100):
            clock.now += 2
            bar.advance()
    assert calls == ["create", "update"]  # it stops trying after the first failure

    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", update)
    with Progress("work", 100, clock=clock) as bar:
        bar.advance(100)
    assert bar.done == 100


def test_a_forced_bar_draws_on_stderr_and_nested_bars_share_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(progress_module.ENV, "1")
    with progress("outer", 2) as outer:
        for _ in range(2):
            with progress("inner", 10) as inner:
                inner.advance(10)
            outer.advance()
        assert progress_module._Display._open == 1
    assert progress_module._Display._rich is None
    err = capsys.readouterr().err
    assert "outer" in err and "inner" in err


def _frame(n: int = 3_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    cat = rng.integers(0, 4, n)
    logit = 1.5 * x1 - 1.0 * x2 + (cat == 2) * 1.2 - 1.0
    return pd.DataFrame(
        {
            "ts": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "x1": x1,
            "x2": x2,
            "cat": cat,
            "y": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        }
    )


def test_round_report_logs_a_bounded_number_of_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.rounds")
    report = RoundReport(Progress("rounds", 10_000), logger, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.rounds"):
        for i in range(10_000):  # 1 ms a round: every 50 rounds would be 20 lines a second
            clock.now = (i + 1) / 1_000
            report(lgb.callback.CallbackEnv(None, {}, i, 0, 10_000, [("valid", "auc", 0.7, True)]))
    assert report.lines == len(caplog.records) == 10  # one a second
    assert caplog.records[0].getMessage() == "LightGBM round 1000/10000: valid auc 0.70000"
    slow = RoundReport(Progress("rounds", 100), logger, clock=clock)
    for i in range(100):  # 20 s a round: each round is past the 5 s interval
        clock.now += 20
        slow(lgb.callback.CallbackEnv(None, {}, i, 0, 100, []))
    assert slow.lines == 100


def test_lightgbm_training_logs_its_rounds_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    split = time_split(_frame(), "ts")
    params = LightGBMParams(num_boost_round=400, early_stopping_rounds=401)
    name = "tasks.training.lightgbm_trainer"
    with caplog.at_level(logging.INFO, logger=name):
        train_lightgbm(split.train, split.valid, ["x1", "x2", "cat"], ["cat"], "y", params, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == name]
    assert 1 <= len(lines) <= 400 // 50 + 1
    assert re.fullmatch(
        r"LightGBM stopped after round \d+ of 400; best iteration \d+: valid auc 0\.\d+, "
        r"valid binary_logloss 0\.\d+",
        lines[-1],
    )


def test_in_process_torch_logs_one_line_an_epoch(caplog: pytest.LogCaptureFixture) -> None:
    split = time_split(_frame(600), "ts")
    params = torch_trainer.TorchParams(epochs=3, batch_size=64, hidden=[8])
    name = "tasks.training.torch_trainer"
    with caplog.at_level(logging.INFO, logger=name):
        torch_trainer.train_torch(
            split.train, split.valid, ["x1", "x2", "cat"], ["cat"], "y", params, seed=0
        )
    lines = [r.getMessage() for r in caplog.records if r.name == name]
    assert [line.split(":")[0] for line in lines] == [f"PyTorch epoch {k}/3" for k in (1, 2, 3)]


def test_a_launched_rank_0s_epoch_lines_are_what_the_trainer_reads() -> None:
    from tasks.training.torch_worker import EPOCH_LINE

    line = "[0]<stdout>:" + EPOCH_LINE.format(epoch=2, epochs=5, loss=0.41234, seconds=3.2)
    found = torch_trainer.EPOCH.search(line)
    assert found and found.group(1, 2) == ("2", "5")
    assert found.group(0) == "epoch 2/5: loss 0.41234, 3.2 s"


def _graph() -> dict[str, list[dask.delayed]]:
    inc = dask.delayed(lambda x: x + 1)
    return {"a": [inc(i) for i in range(20)], "b": [inc(inc(i)) for i in range(5)]}


def test_dask_compute_with_progress_matches_dask_compute_locally() -> None:
    with dask.config.set(scheduler="sync"):
        expected = dask.compute(_graph(), 7)
        assert dask_progress.compute(_graph(), 7, description="local") == expected
        assert dask_progress.compute(3, description="nothing") == (3,)


def test_dask_compute_with_progress_matches_dask_compute_on_a_client() -> None:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None):
        expected = dask.compute(_graph(), 7)
        assert dask_progress.compute(_graph(), 7, description="distributed") == expected
        failing = dask.delayed(lambda: 1 / 0)()
        with pytest.raises(ZeroDivisionError):
            dask_progress.compute([failing, *_graph()["a"]], description="failing")
