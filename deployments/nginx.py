"""nginx as the local serving target's ingress: the role Istio plays for a SeldonDeployment.

Weighted upstream servers split the traffic between the main predictor and a canary; `mirror`
copies every request to a shadow, whose answers no client sees; `nginx -s reload` moves the
weights with no dropped connection (old workers finish what they hold). Every request is
logged as one JSON line (which upstream answered, status, times): the rollout's error and
latency evidence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ACCESS_LOG = "access.log"
LOG_FORMAT = (
    '{"time":"$time_iso8601","msec":$msec,"id":"$request_id","upstream":"$upstream_addr",'
    '"status":$status,'
    '"upstream_status":"$upstream_status","request_time":$request_time,'
    '"upstream_time":"$upstream_response_time","uri":"$request_uri","bytes":$request_length}'
)


@dataclass(frozen=True)
class Upstream:
    address: str  # host:port
    weight: int  # percent of the non-shadow traffic, 1..100


def nginx_config(
    state_dir: str | Path,
    listen: str,
    upstreams: Sequence[Upstream],
    shadow: str | None = None,
    max_body_kb: int = 1024,
    run_as_root: bool = False,
    client_keepalive_s: int = 0,
) -> str:
    """An nginx.conf serving `listen` (host:port) from `upstreams`, mirrored to `shadow`.

    Every path nginx writes (pid, logs, temp files) lies under `state_dir`. With
    `client_keepalive_s` 0 each client request has its own connection: `nginx -s reload`
    closes a kept-alive one right after the answer in flight, and a client's next request on
    it can fail (tests/faults saw it once, on a busy machine: 8 wrk read errors in 17,249
    requests over three reloads).
    """
    if not upstreams or any(not 1 <= u.weight <= 100 for u in upstreams):
        raise ValueError(f"upstream weights must be 1..100, got {list(upstreams)}")
    state = Path(state_dir).resolve()
    servers = "\n".join(f"    server {u.address} weight={u.weight};" for u in upstreams)
    temp = "\n".join(
        f"  {kind}_temp_path {state}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    proxy = (
        "proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_set_header X-Request-Id $request_id;"
    )
    mirror = ""
    shadow_block = ""
    if shadow:
        mirror = "      mirror /_shadow;\n      mirror_request_body on;\n"
        shadow_block = f"""
  upstream mlops_shadow {{
    server {shadow};
    keepalive 8;
  }}"""
        shadow_location = f"""
    location = /_shadow {{
      internal;
      {proxy}
      proxy_pass http://mlops_shadow$request_uri;
    }}"""
    else:
        shadow_location = ""
    user = "user root;\n" if run_as_root else ""
    too_large = json.dumps(
        {
            "status": {
                "code": 413,
                "status": "FAILURE",
                "reason": "TOO_LARGE",
                "info": f"the request body is over {max_body_kb} KB",
            }
        }
    )
    return f"""# written by the local serving target; changed with `nginx -s reload`
{user}worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/nginx-error.log warn;
events {{
  worker_connections 1024;
}}
http {{
  log_format mlops escape=json '{LOG_FORMAT}';
  access_log {state}/{ACCESS_LOG} mlops;
  log_subrequest on;  # the shadow's mirrored requests too: its errors count in the window
{temp}
  client_max_body_size {max_body_kb}k;
  # bodies stay in memory: one spilled to a temp file (over 8-16k) reached the predictor
  # 40 ms late (Nagle and delayed ACK), measured by bench/serve at 100 rows
  client_body_buffer_size {max_body_kb}k;
  keepalive_timeout {int(client_keepalive_s)}s;
  keepalive_requests 100000;

  upstream mlops_model {{
{servers}
    keepalive 32;
  }}{shadow_block}

  server {{
    listen {listen};
    error_page 413 = @too_large;
    location @too_large {{
      default_type application/json;
      return 413 '{too_large}';
    }}
    location / {{
{mirror}      {proxy}
      proxy_next_upstream error timeout;
      proxy_pass http://mlops_model;
    }}
    location = /api/v1.0/predictions {{
{mirror}      {proxy}
      # a score is a pure function of the request: one cut off by a predictor that died
      # mid-answer is sent to the next (its request id may then be logged by both)
      proxy_next_upstream error timeout non_idempotent;
      proxy_pass http://mlops_model;
    }}{shadow_location}
  }}
}}
"""
