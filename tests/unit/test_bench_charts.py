"""bench/charts.py: every benchmark's record draws a PNG, a skipped one draws none, and
bench/results.py's `write_json` keeps the JSON whatever the chart does.

The records are small synthetic ones in the structure each bench module builds (its `figures`
code, bench/<name>.py), written through `write_json` as the module does, so the chart is drawn
from the JSON as written (integer keys turned to text, tuples to lists). The bench modules
themselves are not imported (several seconds each); `test_synthetic_keys_are_the_modules`
checks the records' keys against their source instead."""

from __future__ import annotations

import argparse
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest

import bench.charts as charts
import bench.results as results

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _runs(*seconds: float) -> list[float]:
    return list(seconds)


def preprocess() -> tuple[dict[str, Any], dict[str, Any]]:
    times = {"serial": _runs(3.1, 2.9, 3.0), "dask": _runs(1.9, 2.1, 2.0)}
    rows = 600_000
    med = {"serial": 3.0, "dask": 2.0}
    figures = {
        "comparison": {
            "rows_in": rows,
            "files": 12,
            "seconds": times,
            "median_s": med,
            "rows_per_s": {k: rows / v for k, v in med.items()},
            "ratio_dask_over_serial": med["serial"] / med["dask"],
        },
        "larger_than_memory": {
            "rows_in": 4_000_000,
            "in_memory_bytes": 3 * 2**30,
            "workers_limit_bytes": 2**30,
            "seconds": 41.5,
            "peak_worker_rss_bytes": int(0.8 * 2**30),
        },
    }
    args = {
        "rows": 500_000,
        "repeats": 3,
        "big_rows": 4_000_000,
        "chunk_rows": 500_000,
        "big_chunk_rows": 50_000,
        "worker_memory": "512MiB",
        "work": None,
    }
    return figures, args


def features() -> tuple[dict[str, Any], dict[str, Any]]:
    paths = {
        "stock": "stock Feast 0.49 file offline store (type: file, DaskOfflineStore)",
        "ours": "this project's AsOfFileOfflineStore (merge_asof join)",
        "hand": "hand-written pyarrow read + pandas.merge_asof, same time/key filtering",
    }
    times = {"stock": _runs(30.0, 31.0), "ours": _runs(2.0, 2.2), "hand": _runs(1.0, 1.1)}
    med = {k: sum(v) / 2 for k, v in times.items()}
    check = {
        "rows": 2000,
        "distinct_row_ids": 2000,
        "common_rows": 1990,
        "missing_rows": 10,
        "missing_with_a_view_unmatched": 10,
        "extra_rows": 0,
        "differing_rows": 0,
        "differing_by_column": {},
    }
    historical = {
        "entity_rows": 2000,
        "features": 25,
        "paths": paths,
        "seconds": times,
        "median_s": med,
        "rows_returned": {"stock": 1990, "ours": 2000, "hand": 2000},
        "stock_largest_left_join_rows": 90_000,
        "ratio_ours_over_stock": med["ours"] / med["stock"],
        "ratio_ours_over_hand": med["ours"] / med["hand"],
        "checks_against_ours": {"stock": check, "hand": check},
    }
    online: dict[str, Any] = {"timed_calls": 20, "paths": {}}
    for i, name in enumerate(
        [
            "OnlineReader.read, SQLite online store",
            "Feast SDK get_online_features().to_dict()",
            "the same, Feast's built-in SQLite store",
            "feast serve: HTTP POST, response read",
        ]
    ):
        for n in (1, 100):  # integer keys, as the module writes them
            online["paths"].setdefault(name, {})[n] = {"p50_ms": 0.5 + i, "p99_ms": 1.5 + 2 * i}
    figures = {
        "historical": historical,
        "materialize_s": {"SQLite online store": 1.2, "Feast's SQLite store": 3.4},
        "online": online,
    }
    args = {
        "entities": 2000,
        "transactions": 20_000,
        "repeats": 2,
        "lookups": 40,
        "port": 6571,
        "work": None,
    }
    return figures, args


def train() -> tuple[dict[str, Any], dict[str, Any]]:
    times = {"bare": _runs(2.0, 2.1), "task": _runs(2.05, 2.2), "flow": _runs(2.5, 2.6)}
    med = {k: sum(v) / 2 for k, v in times.items()}
    lightgbm = {
        "training_rows": 4000,
        "features": 22,
        "rounds": 5,
        "seconds": times,
        "median_s": med,
        "ratio_task_over_bare": med["task"] / med["bare"],
        "ratio_flow_over_bare": med["flow"] / med["bare"],
        "same_model": True,
        "warmup_s": {"bare": 0.3, "flow": 1.4},
    }
    runs = {
        "1 process": _runs(10_000.0, 11_000.0),
        "horovod x2": _runs(16_000.0, 17_000.0),
        "horovod x2, 1 ms cycle": _runs(14_000.0, 15_000.0),
        "torch.distributed x2": _runs(18_000.0, 18_500.0),
    }
    sps = {k: sum(v) / 2 for k, v in runs.items()}
    one = sps["1 process"]
    torch = {
        "rows": 2000,
        "epochs": 1,
        "batch_size": 8192,
        "samples_per_s": runs,
        "median_samples_per_s": sps,
        "scaling_efficiency": sps["horovod x2"] / (2 * one),
        "scaling_efficiency_1ms_cycle": sps["horovod x2, 1 ms cycle"] / (2 * one),
        "horovod_over_torch_distributed": sps["horovod x2"] / sps["torch.distributed x2"],
    }
    args = {
        "rows": 5000,
        "rounds": 5,
        "repeats": 2,
        "torch_rows": 2000,
        "epochs": 1,
        "batch_size": 8192,
    }
    return {"lightgbm": lightgbm, "torch": torch}, args


def _metrics(sps: float, peak: float) -> dict[str, float]:
    # train_torch's metrics: binary_metrics(prefix="valid_") + these three
    return {
        "valid_auc": 0.8,
        "samples_per_s": sps,
        "world_size": 1.0,
        "gpu_peak_bytes": peak,
    }


def gpu_train(gpus: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    if gpus == 1:
        configs = ["cuda, 1 GPU, in process", "cpu, in process"]
    else:
        configs = ["cuda, 1 GPU, in process", f"cuda, {gpus} GPUs, horovodrun + NCCL"]
    runs = {
        configs[0]: [_metrics(900_000.0, 3e9), _metrics(950_000.0, 3e9)],
        configs[1]: [_metrics(60_000.0, 0.0), _metrics(61_000.0, 0.0)]
        if gpus == 1
        else [_metrics(1_700_000.0, 3e9), _metrics(1_750_000.0, 3e9)],
    }
    sps = {k: sum(m["samples_per_s"] for m in v) / 2 for k, v in runs.items()}
    one, other = sps[configs[0]], sps[configs[1]]
    figures: dict[str, Any] = {
        "gpus": gpus,
        "device_name": "NVIDIA H200",
        "training_rows": 1_600_000,
        "runs": runs,
        "median_samples_per_s": sps,
    }
    if gpus == 1:
        figures["cuda_over_cpu"] = one / other
    else:
        figures["scaling_efficiency"] = other / (gpus * one)
    args = {"rows": 2_000_000, "epochs": 3, "batch_size": 65_536, "repeats": 2}
    return figures, args


SETUPS = {
    "a": "(a) in process: load_folder().predict(frame)",
    "b": "(b) bare seldon-core-microservice: booster.predict",
    "c": "(c) ModelServer, features in the request",
    "d": "(d) ModelServer, entity lookup + request fields",
    "e": "(e) (d) through nginx",
    "c_in": "    ModelServer.predict_raw in process, features",
    "d_in": "    ModelServer.predict_raw in process, entities",
}


def _wrk_round(requests: int) -> dict[str, Any]:  # parse_wrk's output
    return {
        "requests": requests,
        "seconds": 2.0,
        "percentiles_ms": {50: 7.0, 75: 8.0, 90: 9.0, 99: 12.0},  # integer keys
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "non_2xx": 0,
    }


def serve(wrk: bool = True, batch: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    latency = {
        name: {
            str(size): {"p50_ms": 0.5 + i + size / 50, "p99_ms": 2.0 + i + size / 20, "n": 50}
            for size in (1, 100)
        }
        for i, name in enumerate(SETUPS)
    }
    throughput = None
    if wrk:
        throughput = {}
        for i, name in enumerate(["b", "c", "c_unlogged", "d", "e"]):
            rounds = [_wrk_round(2000 - 100 * i), _wrk_round(1900 - 100 * i)]
            requests = sum(r["requests"] for r in rounds)
            throughput[name] = {
                "requests": requests,
                "seconds": 4.0,
                "requests_per_s": requests / 4.0,
                "p50_ms": 7.0,
                "p99_ms": 12.0,
                "errors": 0,
                "rounds": rounds,
            }
    scoring = None
    if batch:
        labels = {
            "batch_score": "batch_score: entity Parquet -> Feast point-in-time -> calibrated "
            "predict -> scores Parquet (atomic)",
            "bare_read_predict": "bare: read the features Parquet + booster.predict",
            "retrieval": "batch scoring's retrieval alone: prepare_rows + point_in_time",
            "batch_predict": "batch scoring's predict alone: LoadedModel.predict (booster + "
            "calibration)",
            "bare_predict": "bare booster.predict alone, the same in-memory frame",
        }
        seconds = {
            "batch_score": _runs(0.8, 0.9),
            "bare_read_predict": _runs(0.015, 0.016),
            "retrieval": _runs(0.7, 0.75),
            "batch_predict": _runs(0.01, 0.011),
            "bare_predict": _runs(0.01, 0.012),
        }
        median = {k: sum(v) / 2 for k, v in seconds.items()}
        scoring = {
            "rows": 10_000,
            "features": 25,
            "paths": labels,
            "seconds": seconds,
            "median_s": median,
            "rows_per_s": {k: 10_000 / v for k, v in median.items()},
            "ratio_end_to_end": median["bare_read_predict"] / median["batch_score"],
            "ratio_scoring_alone": median["bare_predict"] / median["batch_predict"],
            "batch_scores_vs_in_memory_max_abs_diff": 0.0,
        }
    figures: dict[str, Any] = {
        "model": "credit-risk-default-v1",
        "version": 3,
        "setups": SETUPS,
        "latency": latency,
        "connections_opened": {"b": 1, "c": 1, "d": 1, "e": 1, "c_in": 0, "d_in": 0},
        "errors": {n: {} for n in ("b", "c", "d", "e", "c_in", "d_in")},
        "answers_max_abs_diff": {n: 0.0 for n in SETUPS},
        "wrk": throughput,
        "batch": scoring,
        "load_average": (1.0, 0.9, 0.8),  # os.getloadavg(): a tuple
        "omp_num_threads": None,
    }
    if wrk:
        figures["request_log_throughput_ratio"] = 0.9
    figures.update(
        {
            "ratio_c_over_b_p50": {"1": 1.5, "100": 2.0},
            "e_p99_ms_1_row": 6.0,
            "nginx_hop_p50_ms": {"1": 0.1, "100": 0.2},
            "errors_total": 0,
            "targets": [
                {"figure": "(c)/(b) p50, 1 row", "value": "1.50", "target": "<= 1.3", "met": False}
            ],
        }
    )
    args = {
        "version": None,
        "requests": 50,
        "warmup": 20,
        "block": 10,
        "pool": 200,
        "workers": 1,
        "threads": 2,
        "wrk": "/usr/bin/wrk",
        "wrk_seconds": 2 if wrk else 0,
        "wrk_rounds": 2,
        "wrk_threads": 2,
        "wrk_connections": 8,
        "batch_rows": 0,
        "batch_repeats": 2 if batch else 0,
        "seed": 0,
        "work": None,
    }
    return figures, args


def _window(rate: float, size: int) -> dict[str, Any]:  # window_rates' output
    alarms = int(rate * 20)
    return {
        "windows": 20,
        "size": size,
        "pool": 9000,
        "alarms": alarms,
        "rate": alarms / 20,
        "ci95": [max(0.0, rate - 0.1), min(1.0, rate + 0.1)],
        "by_feature_detector": alarms,
        "by_score_detector": 0,
        "features_flagged": {"loan_amount": alarms} if alarms else {},
        "check_window_median_ms": 7.0,
    }


def _event(q: float) -> dict[str, Any]:  # one_event's output
    return {
        "resource": "mlops.model.bench-monitor-0000",
        "flow_run": "00000000-0000-0000-0000-000000000000",
        "final_state": "COMPLETED",
        "occurred": "2026-11-30T17:30:08+00:00",
        "received": "2026-11-30T17:30:08+00:00",
        "created": "2026-11-30T17:30:08+00:00",
        "pending": "2026-11-30T17:30:11+00:00",
        "running": "2026-11-30T17:30:14+00:00",
        "emit_to_received": 0.003,
        "received_to_created": 2.0,
        "created_to_pending": q / 2,
        "pending_to_running": 3.5,
        "emit_to_running": 5.5 + q / 2,
    }


def monitor(parts: str = "power,cost,latency") -> tuple[dict[str, Any], dict[str, Any]]:
    wanted = set(parts.split(","))
    figures: dict[str, Any] = {"parts": sorted(wanted)}
    sizes = [200, 1000, 5000]
    if "power" in wanted:
        scenario = {
            "drifted_pool": 15000,
            "rows_before": 14000,
            "rows_before_differing_from_baseline": 0,
            "rows_before_not_in_baseline": 0,
            "post_drift_rows_with_a_watched_feature_changed": 0.5,
        }
        rates: dict[str, Any] = {"undrifted": {str(s): _window(0.05, s) for s in sizes}}
        rates["undrifted"]["5000"] = None  # window_rates: the pool was smaller than a window
        for name in ("loan_amount", "concept"):
            rates[name] = {str(s): _window(0.9 if name != "concept" else 0.05, s) for s in sizes}
        figures["power"] = {
            "checks": {
                "baseline_rows": 30000,
                "before_drift_start": 14000,
                "reference_rows": 5000,
                "reference_rows_found_before_drift_start": 5000,
                "undrifted_pool": 9000,
                "undrifted_from": "2024-09-10",
                "undrifted_to": "2026-02-01",
                "train_to": "2025-09-22",
                "train_split_before_drift_start": True,
                "scenarios": {"loan_amount": scenario, "concept": dict(scenario)},
            },
            "rates": rates,
            "definitions": {"loan_amount": "loans 1.6x", "concept": "the label's rule"},
            "drift_start": "2026-02-02",
            "refit_identical": True,
        }
    if "cost" in wanted:
        check = {"check_window": _runs(0.012, 0.013), "predict": _runs(0.014, 0.015)}
        reads = {
            "read_log": _runs(0.4, 0.41),
            "read_traffic": _runs(0.38, 0.39),
            "check_model": _runs(1.1, 1.2),
        }
        read_median = {k: sum(v) / 2 for k, v in reads.items()}
        figures["cost"] = {
            "check_vs_predict": {
                "rows": 10_000,
                "reps": 2,
                "seconds": check,
                "median_s": {k: sum(v) / 2 for k, v in check.items()},
                "ratio_check_over_predict": 0.86,
            },
            "request_log": {
                "records": 20_000,
                "segments": 1,
                "bytes": 17_000_000,
                "write_s": 0.5,
                "reps": 2,
                "records_read_by_read_traffic": 20_000,
                "windows_checked_by_check_model": 20,
                "seconds": reads,
                "median_s": read_median,
                "records_per_s": {k: 20_000 / v for k, v in read_median.items()},
            },
        }
    if wanted & {"power", "cost"}:
        figures["setup_s"] = {"data_baseline": 28.0, "training": 6.0}
        figures["model"] = {"name": "bench-monitor", "version": 1}
    if "latency" in wanted:
        segments = [
            "emit_to_received",
            "received_to_created",
            "created_to_pending",
            "pending_to_running",
            "emit_to_running",
        ]
        settings = {}
        for q in (10.0, 2.0):
            reps = [_event(q), _event(q)]
            settings[f"{q:g}"] = {
                "query_seconds": q,
                "default": q == 10.0,
                "reps": reps,
                "median_s": {k: sum(r[k] for r in reps) / 2 for k in segments},
            }
        figures["latency"] = {
            "default_query_seconds": 10.0,
            "settings": settings,
            "server_start_s": 15.0,
            "automation": {"type": "event", "posture": "Reactive", "threshold": 1},
        }
    figures["targets"] = [
        {"figure": "false alarms at 1,000 rows", "value": "5.0%", "target": "<= 5%", "met": True}
    ]
    figures["wall_s"] = 120.0
    figures["load_average"] = (0.6, 0.9, 1.0)
    args = {
        "quick": True,
        "parts": parts,
        "transactions": 400_000,
        "windows": 20,
        "sizes": sizes,
        "cost_rows": 10_000,
        "cost_reps": 2,
        "log_records": 20_000,
        "read_reps": 2,
        "latency_reps": 2,
        "query_seconds": [10.0, 2.0],
        "seed": 0,
        "work": None,
    }
    return figures, args


RECORDS = {
    "preprocess": preprocess,
    "features": features,
    "train": train,
    "gpu_train": gpu_train,
    "serve": serve,
    "monitor": monitor,
}
VARIANTS = [
    *[(name, build) for name, build in RECORDS.items()],
    ("gpu_train", lambda: gpu_train(gpus=2)),
    ("serve", lambda: serve(wrk=False, batch=False)),
    ("monitor", lambda: monitor("latency")),
]


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """bench/results and docs/bench moved under tmp_path."""
    out, docs = tmp_path / "results", tmp_path / "docs"
    monkeypatch.setattr(results, "RESULTS", out)
    monkeypatch.setattr(charts, "RESULTS", out)
    monkeypatch.setattr(charts, "DOCS", docs)
    return out, docs


def run(
    name: str, figures: dict[str, Any], args: dict[str, Any], json_path: Path, chart: str | None
) -> None:
    namespace = argparse.Namespace(**args, json=str(json_path), chart=chart)
    results.write_json(str(json_path), name, namespace, figures)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(("name", "build"), VARIANTS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_default_run_draws_its_chart_beside_a_copy_of_its_json(
    name: str, build: Any, places: tuple[Path, Path]
) -> None:
    out, docs = places
    figures, args = build()
    run(name, figures, args, out / f"{name}.json", None)
    written = out / f"{name}.json"
    record = json.loads(written.read_text())
    assert record["figures"] and "chart" not in record["args"]
    width, height = png_size(docs / f"{name}.png")
    assert 1000 <= width <= 1400 and 400 <= height <= 1400
    assert (docs / f"{name}.json").read_text() == written.read_text()


def test_a_skipped_record_draws_nothing(places: tuple[Path, Path], capsys) -> None:
    out, docs = places
    figures = {"skipped": "no NVIDIA GPU visible to torch"}  # bench/gpu_train.py without a GPU
    args = {"rows": 10, "epochs": 1, "batch_size": 8, "repeats": 1}
    run("gpu_train", figures, args, out / "gpu_train.json", None)
    assert (out / "gpu_train.json").exists()
    assert not docs.exists() or not list(docs.iterdir())
    assert "skipped" in capsys.readouterr().out
    record = json.loads((out / "gpu_train.json").read_text())
    assert charts.draw(record, docs / "gpu_train.png") is None


def test_a_failing_chart_keeps_the_json(
    places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out, docs = places

    def broken(record: dict, path: Path) -> Path:
        raise RuntimeError("no fonts today")

    monkeypatch.setattr(charts, "draw", broken)
    figures, args = preprocess()
    run("preprocess", figures, args, out / "preprocess.json", None)
    assert json.loads((out / "preprocess.json").read_text())["figures"] == figures
    assert "no chart drawn" in capsys.readouterr().out
    assert not (docs / "preprocess.json").exists()


def test_a_record_missing_what_its_chart_needs_keeps_the_json(places: tuple[Path, Path]) -> None:
    out, docs = places
    run("serve", {"latency": {}}, {}, out / "serve.json", None)
    assert json.loads((out / "serve.json").read_text())["figures"] == {"latency": {}}
    assert not (docs / "serve.png").exists()


def test_a_custom_json_path_leaves_the_docs_alone_unless_a_chart_is_named(
    places: tuple[Path, Path], tmp_path: Path
) -> None:
    _, docs = places
    figures, args = train()
    run("train", figures, args, tmp_path / "trial.json", None)
    assert (tmp_path / "trial.json").exists() and not docs.exists()
    run("train", figures, args, tmp_path / "trial.json", str(tmp_path / "trial.png"))
    png_size(tmp_path / "trial.png")
    assert not docs.exists()


def test_the_cli_redraws_given_records(places: tuple[Path, Path], tmp_path: Path) -> None:
    _, docs = places
    figures, args = preprocess()
    run("preprocess", figures, args, tmp_path / "p.json", None)
    skipped = tmp_path / "g.json"
    run("gpu_train", {"skipped": "no GPU"}, {}, skipped, None)
    charts.main([str(tmp_path / "p.json"), str(skipped), "--out", str(tmp_path / "charts")])
    png_size(tmp_path / "charts" / "preprocess.png")
    assert (tmp_path / "charts" / "preprocess.json").read_text() == (
        tmp_path / "p.json"
    ).read_text()
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == [
        "preprocess.json",
        "preprocess.png",
    ]
    assert not docs.exists()  # --out, not docs/bench


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return {str(k) for k in value} | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list | tuple):
        return {k for v in value for k in _keys(v)}
    return set()


# keys made from data, by f-strings or by code outside the module (Prefect's trigger dump)
DATA_KEYS = {"loan_to_income", "valid_auc", "data_baseline", "type", "posture", "threshold"}


@pytest.mark.parametrize("name", list(RECORDS))
def test_synthetic_keys_are_the_modules(name: str) -> None:
    """Every key of a synthetic record is a string literal of its bench module (or of a
    module it reads), so the records follow the code they stand in for."""
    sources = (ROOT / "bench" / f"{name}.py").read_text()
    if name == "gpu_train":
        sources += (ROOT / "tasks" / "training" / "torch_trainer.py").read_text()
    figures, args = RECORDS[name]()
    literals = {a or b for a, b in re.findall(r""""([^"\n]+)"|'([^'\n]+)'""", sources)}
    missing = {k for k in _keys(figures) - DATA_KEYS if k not in literals and not k.isdigit()}
    assert not missing, missing
    declared = set(re.findall(r"""add_argument\(\s*["']--([\w-]+)""", sources))
    dest = set(re.findall(r"""dest=["'](\w+)["']""", sources))
    options = {d.replace("-", "_") for d in declared} | dest
    assert set(args) <= options, set(args) - options
