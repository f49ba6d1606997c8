"""JSRT_METRICS_ADDR: validated at start-up; a port that cannot be bound is a one-line error."""

from __future__ import annotations

import socket

import pytest

from consumer.errors import ConfigError
from consumer.metrics import bind
from consumer.settings import Settings


@pytest.mark.parametrize("addr", ["", "127.0.0.1:9464", "0.0.0.0:0", "[::1]:9464", ":9464"])
def test_accepted_addresses(addr: str) -> None:
    assert Settings.from_env(env={"JSRT_METRICS_ADDR": addr}).metrics_addr == addr


@pytest.mark.parametrize("addr", ["9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000"])
def test_rejected_addresses(addr: str) -> None:
    with pytest.raises(ConfigError, match="JSRT_METRICS_ADDR must be HOST:PORT"):
        Settings.from_env(env={"JSRT_METRICS_ADDR": addr})


def test_default_is_loopback_and_interval_must_be_positive() -> None:
    assert Settings().metrics_addr == "127.0.0.1:9464"
    with pytest.raises(ConfigError, match="JSRT_METRICS_INTERVAL"):
        Settings.from_env(env={"JSRT_METRICS_INTERVAL": "0"})


def test_a_port_in_use_is_a_config_error_naming_the_setting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            bind(f"127.0.0.1:{port}")
    assert str(err.value) == (f"cannot serve metrics on 127.0.0.1:{port}: address already in "
                              "use; set JSRT_METRICS_ADDR to another HOST:PORT, or empty to "
                              "disable")


def test_port_zero_binds_a_free_port() -> None:
    with bind("127.0.0.1:0") as sock:
        assert sock.getsockname()[1] > 0


def test_only_an_address_that_was_set_counts_as_chosen() -> None:
    assert Settings.from_env(env={}).metrics_addr_given is False
    assert Settings.from_env(env={"JSRT_METRICS_ADDR": "127.0.0.1:9464"}).metrics_addr_given
    assert Settings.from_env(env={}, metrics_addr="127.0.0.1:0").metrics_addr_given
