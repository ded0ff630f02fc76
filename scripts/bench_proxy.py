#!/usr/bin/env python3
"""The gateway beside a bare reverse proxy, with wrk as the load tool (issue #19).

Starts its own nginx (Debian's, one worker, its own config and prefix in a temporary folder, run
in the foreground by PID and killed at the end, never the system service) proxying to the mock
upstream with keep-alive and no buffering, so a stream is relayed as it comes. Then, for each
target (the mock directly, nginx, nexus-server) and each shape (non-stream c=1 and c=32, 20-chunk
stream c=32) it runs wrk (one thread, the same POST body; the gateway's row carries the client
key) and reads the target process's CPU time from /proc before and after:

    CPU per request = (utime + stime of the target process during the run) / requests done

and wrk's requests/s and latency percentiles. One JSON line per row on stdout (for
results.jsonl), the table on stderr.

    python3 scripts/bench_proxy.py --mock URL --mock-pid PID --gateway URL --gateway-pid PID \
        --key KEY [--duration 10]

Everything listens on and talks to 127.0.0.1 only; every run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional
from urllib.parse import urlparse

TICK = os.sysconf("SC_CLK_TCK")

BODY = {"model": "chunks20", "messages": [{"role": "user", "content": "hello"}]}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the command.
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(mock: str, work: str) -> subprocess.Popen[bytes]:
    up = urlparse(mock)
    port = free_port()
    conf = f"""
worker_processes 1;
daemon off;
master_process off;
error_log {work}/error.log warn;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    upstream mock {{ server {up.hostname}:{up.port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = subprocess.Popen([nginx, "-p", work, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if p.poll() is not None:
                err = p.stderr.read().decode() if p.stderr else ""
                raise SystemExit(f"nginx did not start: {err}")
            time.sleep(0.05)
    p.port = port  # type: ignore[attr-defined]
    return p


def wrk(url: str, key: Optional[str], stream: bool, conns: int, secs: float, work: str) -> Dict[str, float]:
    body = dict(BODY)
    if stream:
        body["stream"] = True
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    script = os.path.join(work, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
        for k, v in headers.items():
            f.write(f'wrk.headers["{k}"] = "{v}"\n')
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(secs))}s", "--latency", "-s", script, url + "/v1/chat/completions"],
        capture_output=True,
        text=True,
        timeout=secs + 30,
        check=True,
    ).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return {
        "requests": reqs,
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": sock.group(1).strip() if sock else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mock", required=True)
    ap.add_argument("--mock-pid", type=int, required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--gateway-pid", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="nexus-bench-nginx-")
    nginx = start_nginx(a.mock, work)
    try:
        targets = [
            ("direct", a.mock, a.mock_pid, None),
            ("nginx", f"http://127.0.0.1:{nginx.port}", nginx.pid, None),  # type: ignore[attr-defined]
            ("gateway", a.gateway, a.gateway_pid, a.key),
        ]
        shapes = [("nonstream", False, 1), ("nonstream", False, 32), ("stream", True, 32)]
        rows: List[Dict[str, object]] = []
        for shape, stream, c in shapes:
            for via, url, pid, key in targets:
                wrk(url, key, stream, c, min(1.0, a.duration), work)  # warm-up
                before = cpu_seconds(pid)
                r = wrk(url, key, stream, c, a.duration, work)
                cpu = cpu_seconds(pid) - before
                row = {
                    "bench": f"proxy-{shape}-c{c}",
                    "via": via,
                    "tool": "wrk",
                    "concurrency": c,
                    **r,
                    "cpu_s": cpu,
                    "cpu_ms_per_req": 1000 * cpu / max(1, int(r["requests"])),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        print(f"{'shape':18} {'via':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} errors", file=sys.stderr)
        for r in rows:
            print(
                f"{r['bench']:18} {r['via']:8} {r['rps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f}"
                f" {r['cpu_ms_per_req']:11.4f} {r['errors']} {r['socket_errors']}",
                file=sys.stderr,
            )
        base = {(r["bench"], r["via"]): r for r in rows}
        for shape, _, c in shapes:
            b = f"proxy-{shape}-c{c}"
            g, n, d = base[(b, "gateway")], base[(b, "nginx")], base[(b, "direct")]
            print(
                f"{b}: gateway CPU/req {g['cpu_ms_per_req']:.4f} ms = {g['cpu_ms_per_req'] / max(n['cpu_ms_per_req'], 1e-9):.2f}x nginx's;"
                f" added p50 gateway {g['p50_ms'] - d['p50_ms']:+.3f} ms, nginx {n['p50_ms'] - d['p50_ms']:+.3f} ms",
                file=sys.stderr,
            )
    finally:
        nginx.terminate()
        try:
            nginx.wait(timeout=5)
        except subprocess.TimeoutExpired:
            nginx.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
