"""Fixtures for the Python client tests: stubs generated from proto/ with grpcio-tools at test
time, and a real `mfa-reset serve --demo` process (the binary named by MFA_RESET_BIN) on a
free port with a fresh data directory."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "proto"


def _generate_stubs(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "mfareset" / "v1").glob("*.proto"))
    # grpcio-tools ships the well-known types (google/protobuf/*.proto).
    wkt = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        ["protoc", f"-I{PROTO}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}", *sources]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with {code}")


# Generated when pytest loads this file, before it imports the tests (which import stubs).
_STUBS = Path(tempfile.mkdtemp(prefix="mfa-reset-stubs-"))
_generate_stubs(_STUBS)
sys.path.insert(0, str(_STUBS))


def pytest_unconfigure(config):
    shutil.rmtree(_STUBS, ignore_errors=True)


@pytest.fixture(scope="session")
def stubs():
    from mfareset.v1 import (  # noqa: PLC0415 (generated above)
        audit_log_service_pb2,
        audit_log_service_pb2_grpc,
        customers_service_pb2,
        customers_service_pb2_grpc,
        mfa_reset_pb2,
        users_service_pb2,
        users_service_pb2_grpc,
    )

    class Stubs:
        audit = audit_log_service_pb2
        audit_grpc = audit_log_service_pb2_grpc
        customers = customers_service_pb2
        customers_grpc = customers_service_pb2_grpc
        reset = mfa_reset_pb2
        users = users_service_pb2
        users_grpc = users_service_pb2_grpc

    return Stubs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The demo server and what its export lines say (tokens, customer and user ids)."""

    def __init__(self, addr: str, env: dict):
        self.addr = addr
        self.env = env
        self.channel = grpc.insecure_channel(addr)

    def metadata(self, token_var: str = "TOKEN"):
        return (("authorization", f"Bearer {self.env[token_var]}"),)


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("MFA_RESET_BIN", str(REPO / "target" / "debug" / "mfa-reset"))
    data = tempfile.mkdtemp(prefix="mfa-reset-python-")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MFA_RESET_", "OTEL_"))}
    process = subprocess.Popen(
        [binary, "serve", "--demo", "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--log", "warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        running = _started(process, port)
        yield running
        running.channel.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def _started(process, port) -> "Server":
    """Reads the demo's export lines (at most 60 s) and waits for the port to answer."""
    exports = {}
    deadline = time.monotonic() + 60
    wanted = {"TOKEN", "APPROVER_TOKEN", "NORTHWIND", "CONTOSO", "RESET_ME", "SELF_USER", "CONTOSO_ADMIN", "NO_MFA", "TEAM_1", "TEAM_2", "TEAM_3"}
    while not wanted <= exports.keys():
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"mfa-reset serve --demo exited with {process.wait()} before printing its exports")
        match = re.match(r"^export ([A-Z][A-Z0-9_]*)=([A-Za-z0-9._:-]+)$", line.strip())
        if match:
            exports[match.group(1)] = match.group(2)
        if time.monotonic() > deadline:
            raise RuntimeError("no export lines within 60 s")
    running = Server(f"127.0.0.1:{port}", exports)
    grpc.channel_ready_future(running.channel).result(timeout=30)
    return running
