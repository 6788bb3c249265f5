"""The sandbox's ports: chosen where no outgoing connection can take them before the server binds."""

from __future__ import annotations

import json
import socket

from sandbox.services import LOCALHOST, ephemeral_ports, free_port, port_free
from sandbox.stack import SandboxState


def test_a_free_port_is_below_the_ephemeral_range_and_bindable():
    ephemeral = ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert not [p for p in ports if p in ephemeral], ports
    assert all(port_free(p) for p in ports)


def test_a_free_port_is_none_of_those_taken_and_not_one_in_use():
    with socket.socket() as listening:
        listening.bind((LOCALHOST, free_port()))
        listening.listen()
        in_use = listening.getsockname()[1]
        assert not port_free(in_use)
        taken = [free_port() for _ in range(20)]
        assert in_use not in taken and free_port(taken=taken) not in taken


def test_a_sandbox_gets_distinct_safe_ports_and_replaces_a_kept_one_from_the_ephemeral_range(tmp_path):
    ephemeral = ephemeral_ports()
    (tmp_path / "state.json").write_text(json.dumps({"ports": {"clickhouse": ephemeral.start + 7}, "secrets": {}}))
    ports = SandboxState(tmp_path).ports
    assert sorted(ports) == sorted(SandboxState.KEYS) and len(set(ports.values())) == len(ports)
    assert not [p for p in ports.values() if p in ephemeral], ports
    assert SandboxState(tmp_path).ports == ports  # kept across restarts while they stay free
