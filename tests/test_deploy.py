"""The deployment that docs/serving.md shows is the one that works: its systemd unit passes `systemd-analyze
verify` (where systemd is installed), its nginx config passes `nginx -t` and proxies a live server (where nginx is
installed), and what the two share with the server (port, body limit, keys, shutdown grace) agrees with its flags."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headrank.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
KEY = "hr-deploy-key-51d0"


def block(name: str) -> str:
    """The fenced block that follows the line naming `name` in docs/serving.md."""
    text = DOC.read_text()
    found = re.search(rf"`{re.escape(name)}`[^\n]*:\n\n```\w+\n(.*?)\n```", text, re.S)
    assert found, f"no block for {name} in {DOC}"
    return found.group(1)


UNIT = block("/etc/systemd/system/headrank.service")
NGINX = block("/etc/nginx/conf.d/headrank.conf")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string(UNIT)
    return parser


def serve_args(service) -> object:
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/headrank") and argv[1] == "serve"
    return build_parser().parse_args(argv[1:])


def nginx_setting(name: str) -> str:
    found = re.search(rf"^\s*{name}\s+([^;]+);", NGINX, re.M)
    assert found, name
    return found.group(1)


def test_the_unit_and_the_proxy_agree_with_the_server_flags():
    service = unit()["Service"]
    args = serve_args(service)
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert re.search(rf"server {args.host}:{args.port};", NGINX)
    size = nginx_setting("client_max_body_size")
    assert size.endswith("m") and int(size[:-1]) * 2**20 == args.max_body_bytes
    credential, source = service["LoadCredential"].split(":", 1)
    assert args.api_key_file == f"${{CREDENTIALS_DIRECTORY}}/{credential}" and source.startswith("/etc/")
    assert not args.api_key  # no key on the command line (ps shows it)
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > args.shutdown_grace + 3  # the grace, then the worker's last layer
    assert int(nginx_setting("proxy_read_timeout").removesuffix("s")) > args.shutdown_grace
    assert "proxy_set_header X-Request-Id $headrank_request_id" in NGINX


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    executable = Path(sys.executable).parent / "headrank"
    if not executable.exists():
        pytest.skip("the headrank command is not installed beside this Python")
    text = UNIT.replace("/opt/headrank/.venv/bin/headrank", str(executable))
    (tmp_path / "headrank.service").write_text(text + "\n")
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "headrank.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [line for line in run.stderr.splitlines() if "headrank.service" in line]
    assert run.returncode == 0 and not problems, run.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nginx_config(tmp_path: Path, upstream: int, listen: int) -> Path:
    """The documented config, listening on `listen` and proxying to `upstream`, in a main config of its own
    (pid, logs and temporary files in `tmp_path`)."""
    site = NGINX.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    (tmp_path / "headrank.conf").write_text(site)
    temp = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = f"""
{"user root;" if os.geteuid() == 0 else ""}
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
daemon off;
events {{}}
http {{
    access_log {tmp_path}/access.log;
    {temp}
    include {tmp_path}/headrank.conf;
}}
"""
    (tmp_path / "nginx.conf").write_text(main)
    return tmp_path / "nginx.conf"


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_the_proxy_config_passes_nginx_t_and_serves_through_nginx(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from headrank.serve.app import ServeConfig, create_app

    from .conftest import DOCS, FLEA_QUERY, served
    from .test_serve_socket import tiny, until

    app = create_app(tiny(), ServeConfig(api_keys=(KEY,), warm_up=False, max_body_bytes=4 * 2**20))
    with served(app) as server:
        listen = _free_port()
        config = _nginx_config(tmp_path, server.base_url.port, listen)
        check = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        proxy = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config)], stderr=subprocess.PIPE)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=60) as client:
                until(lambda: _answers(client))
                body = {"query": FLEA_QUERY, "documents": DOCS}
                key = {"Authorization": f"Bearer {KEY}"}
                made = client.post("/v1/rerank", json=body, headers=key)
                kept = client.post("/v1/rerank", json=body, headers={**key, "X-Request-Id": "from-client-1"})
                refused = client.post("/v1/rerank", json=body)
                big = client.post(
                    "/v1/rerank", content=b"x" * (5 * 2**20), headers={"content-type": "application/json"}
                )
                metrics = client.get("/metrics")
        finally:
            proxy.terminate()
            proxy.wait(30)
    assert made.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])  # nginx's id
    assert made.json()["id"] == made.headers["x-request-id"]
    assert kept.headers["x-request-id"] == kept.json()["id"] == "from-client-1"
    assert refused.status_code == 401 and big.status_code == 413
    assert metrics.status_code == 200 and "headrank_requests_total" in metrics.text  # from 127.0.0.1: allowed


def _answers(client) -> bool:
    try:
        return client.get("/ping").status_code == 200
    except Exception:  # not listening yet
        return False
