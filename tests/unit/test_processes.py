"""Process identity and port checks used by `dropship dev up/down`."""

from __future__ import annotations

import socket
import subprocess

import pytest

from pipeline.devstack.processes import (
    Proc,
    StackError,
    accepts_connections,
    check_port_free,
    free_port,
    start_ticks,
)


def test_proc_is_alive_until_stopped() -> None:
    child = subprocess.Popen(["sleep", "30"])
    proc = Proc.of(child.pid)
    assert proc.alive()
    proc.stop(timeout_s=5)
    child.wait(timeout=5)
    assert not proc.alive()
    assert start_ticks(child.pid) is None


def test_a_recycled_pid_is_not_ours() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        impostor = Proc(child.pid, start_ticks=Proc.of(child.pid).start_ticks + 1)
        assert not impostor.alive()
        impostor.stop()  # must not signal a process that is not ours
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_taken_port_gives_one_line_error_naming_the_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert accepts_connections(port)
        with pytest.raises(StackError) as err:
            check_port_free(port, "Kafka broker", "DROPSHIP_DEV_KAFKA_PORT")
    message = str(err.value)
    assert "\n" not in message
    assert f"port {port}" in message
    assert "taken" in message
    assert "DROPSHIP_DEV_KAFKA_PORT" in message


def test_free_port_is_bindable() -> None:
    port = free_port()
    check_port_free(port, "x", "Y")
    assert not accepts_connections(port)


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first: its end of the connection enters TIME-WAIT
    client.close()
    server.close()
    with socket.socket() as plain, pytest.raises(OSError, match="in use"):
        plain.bind(("127.0.0.1", port))  # without SO_REUSEADDR the port looks taken...
    check_port_free(port, "PostgreSQL server", "DROPSHIP_DEV_PG_PORT")  # ...but it is free
