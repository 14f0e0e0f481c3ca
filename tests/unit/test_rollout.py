"""Canary analysis: each RolloutPolicy limit decides on its own, from the logs' records."""

from __future__ import annotations

import numpy as np
import pytest

from blocks import ServingTarget
from deployments.nginx import Upstream, nginx_config
from tasks.serving.rollout import RolloutPolicy, SideStats, analyse, side_stats


def _records(version: int, role: str, scores, latency: float = 2.0) -> list[dict]:
    return [
        {
            "request_id": f"{role}-{i}",
            "row": 0,
            "version": version,
            "role": role,
            "score": float(s),
            "latency_ms": latency,
        }
        for i, s in enumerate(scores)
    ]


def _sides(challenger_scores, champion_scores, **kw) -> tuple[SideStats, SideStats]:
    records = _records(2, "canary", challenger_scores, kw.get("latency", 2.0)) + _records(
        1, "main", champion_scores
    )
    labels = kw.get("labels", {})
    ingress = kw.get("ingress", [])
    return (
        side_stats(records, labels, ingress, 2, "canary", "127.0.0.1:2"),
        side_stats(records, labels, ingress, 1, "main", "127.0.0.1:1"),
    )


RNG = np.random.default_rng(0)
SAME = RNG.beta(2, 8, 400)


def test_a_challenger_like_the_champion_passes() -> None:
    reasons, evidence = analyse(RolloutPolicy(), *_sides(SAME[:200], SAME[200:]), True)
    assert reasons == [] and evidence["challenger"]["predictions"] == 200


def test_a_score_shift_counts_only_when_significant() -> None:
    small = np.random.default_rng(4).beta(2, 8, 20) + 0.1  # KS 0.42 on 20 rows, p 0.02
    policy = RolloutPolicy(max_score_shift=0.2, min_requests=10)
    reasons, evidence = analyse(policy, *_sides(small, SAME[200:230]), True)
    assert evidence["score_ks"] > 0.2 and evidence["score_ks_p"] > 0.01 and reasons == []


@pytest.mark.parametrize(
    ("policy", "kw", "challenger", "expected"),
    [
        (RolloutPolicy(min_requests=300), {}, SAME[:200], "insufficient traffic"),
        (RolloutPolicy(max_p99_ms=1.0), {"latency": 3.0}, SAME[:200], "latency p99 3.00 ms"),
        (RolloutPolicy(max_score_shift=0.2), {}, SAME[:200] + 0.3, "scores shifted"),
        (
            RolloutPolicy(max_error_rate=0.01),
            {
                "ingress": [{"upstream": "127.0.0.1:2, 127.0.0.1:1", "upstream_status": "502, 200"}]
                + [{"upstream": "127.0.0.1:2", "upstream_status": "200"}] * 9
            },
            SAME[:200],
            "error rate 10.00% (1/10)",
        ),
    ],
)
def test_each_limit_refuses_on_its_own(policy, kw, challenger, expected) -> None:
    reasons, _ = analyse(policy, *_sides(challenger, SAME[200:], **kw), True)
    assert len(reasons) == 1 and expected in reasons[0], reasons


def test_live_auc_counts_only_with_enough_labels_on_both_sides() -> None:
    y = (RNG.random(400) < SAME).astype(float)
    labels = {(f"main-{i}", 0): y[200 + i] for i in range(200)}
    labels |= {(f"canary-{i}", 0): y[i] for i in range(200)}
    noise = RNG.random(200)  # a challenger whose scores carry no signal
    policy = RolloutPolicy(min_labels=150, max_auc_drop=0.02, max_score_shift=1.0)
    challenger, champion = _sides(noise, SAME[200:], labels=labels)
    reasons, _ = analyse(policy, challenger, champion, True)
    assert challenger.labelled == 200 and any("live AUC" in r for r in reasons)
    few = RolloutPolicy(min_labels=500, max_score_shift=1.0)
    assert analyse(few, challenger, champion, True)[0] == []


def test_a_dead_challenger_is_never_promoted() -> None:
    reasons, _ = analyse(RolloutPolicy(), *_sides(SAME[:200], SAME[200:]), False)
    assert reasons == ["the challenger's process died during the window"]


def test_nginx_splits_by_weight_and_mirrors_to_the_shadow(tmp_path) -> None:
    config = nginx_config(
        tmp_path,
        "127.0.0.1:9000",
        [Upstream("127.0.0.1:1", 90), Upstream("127.0.0.1:2", 10)],
        shadow="127.0.0.1:3",
        max_body_kb=64,
    )
    assert "server 127.0.0.1:1 weight=90;" in config and "server 127.0.0.1:2 weight=10;" in config
    assert "mirror /_shadow;" in config and "server 127.0.0.1:3;" in config
    assert "client_max_body_size 64k;" in config and "listen 127.0.0.1:9000;" in config
    # no keep-alive to clients by default: a reload then fails no request (tests/faults)
    assert "keepalive_timeout 0s;" in config
    kept = ServingTarget(client_keepalive_s=30).local_settings().client_keepalive_s
    assert "keepalive_timeout 30s;" in nginx_config(
        tmp_path, "127.0.0.1:9000", [Upstream("127.0.0.1:1", 100)], client_keepalive_s=kept
    )
    with pytest.raises(ValueError, match=r"1\.\.100"):
        nginx_config(tmp_path, "127.0.0.1:9000", [Upstream("127.0.0.1:1", 0)])
