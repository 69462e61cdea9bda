"""Per-listener figures from socket rows: captured /proc/net tables of a real Gunicorn, and hand-made rows."""

from __future__ import annotations

import socket

import pytest

from datadog_checks.gunicorn.configuration import parse_bind
from datadog_checks.gunicorn.sources.sockets.listener_stats import listener_stats
from datadog_checks.gunicorn.sources.sockets.rows import TCP_ESTABLISHED, TCP_LISTEN, ListenerStats, TcpRow

from .captured import MANIFEST, fixture_tcp, fixture_unix

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6


# Matching rows to listeners


@pytest.mark.parametrize('scenario', sorted(MANIFEST))
def test_listener_stats_on_captured_tables(scenario):
    want = MANIFEST[scenario]
    (stats,) = listener_stats(fixture_tcp(), fixture_unix(), [parse_bind(want['address'])])
    kind = 'unix' if scenario.startswith('unix') else 'tcp6' if scenario.startswith('tcp6') else 'tcp'
    assert stats == ListenerStats(
        want['address'], kind, tuple(want['listen_inodes']), want['queued'], want['in_flight'], None
    )


def test_another_programs_listener_on_the_same_port_is_never_counted():
    addresses = [MANIFEST['tcp_app']['address'], MANIFEST['unix_app']['address']]
    stats = listener_stats(fixture_tcp(), fixture_unix(), [parse_bind(a) for a in addresses])
    assert [s.address for s in stats] == addresses
    assert MANIFEST['tcp_other']['listen_inodes'][0] not in {i for s in stats for i in s.listen_inodes}


def test_no_address_returns_nothing():
    assert listener_stats(fixture_tcp(), fixture_unix(), []) == []


def test_identified_listener_without_rows_is_left_out():
    assert listener_stats(fixture_tcp(), fixture_unix(), [parse_bind('127.0.0.1:1'), parse_bind('unix:/nope')]) == []


def test_max_backlog_is_summed_over_reuse_port_sockets_and_unknown_when_one_is_missing():
    want = MANIFEST['tcp_reuse_port']
    first, second = want['listen_inodes']
    (stats,) = listener_stats(fixture_tcp(), [], [parse_bind(want['address'])], {first: 4, second: 4})
    assert (stats.queued, stats.max_backlog) == (5, 8)
    (stats,) = listener_stats(fixture_tcp(), [], [parse_bind(want['address'])], {first: 4})
    assert stats.max_backlog is None


def _row(family, local, port, state, inode, rx=0):
    return TcpRow(family, local, port, state, 0, rx, 0, inode)


def test_wildcard_listeners_take_connections_of_their_own_table_only():
    listen, estab = TCP_LISTEN, TCP_ESTABLISHED
    rows = [
        _row(AF_INET, '0.0.0.0', 8000, listen, 1, rx=2),
        _row(AF_INET, '127.0.0.1', 8000, estab, 11),
        _row(AF_INET, '10.0.0.5', 8000, estab, 12),
        _row(AF_INET, '10.0.0.5', 8000, estab, 0),  # queued
        _row(AF_INET, '10.0.0.5', 8001, estab, 13),  # another port
        # A v6-only '[::]:8000' of another program: its rows, v4-mapped or not, are in tcp6.
        _row(AF_INET6, '::', 8000, listen, 2, rx=1),
        _row(AF_INET6, '::ffff:10.0.0.5', 8000, estab, 21),
        _row(AF_INET6, '2001:db8::5', 8000, estab, 22),
    ]
    (v4,) = listener_stats(rows, [], [parse_bind('0.0.0.0:8000')])
    assert (v4.address, v4.kind, v4.listen_inodes, v4.queued, v4.in_flight) == ('0.0.0.0:8000', 'tcp', (1,), 2, 2)
    (v6,) = listener_stats(rows, [], [parse_bind('[::]:8000')])
    assert (v6.address, v6.kind, v6.queued, v6.in_flight) == ('[::]:8000', 'tcp6', 1, 2)
    # A specific address is not the wildcard listener on its port.
    assert listener_stats(rows, [], [parse_bind('10.0.0.5:8000')]) == []


# Accepted inodes and LISTEN-only reads


def test_accepted_inodes_are_the_connections_counted_in_flight():
    stats = listener_stats(fixture_tcp(), fixture_unix(), [parse_bind(MANIFEST['tcp_app']['address'])])
    (tcp_app,) = stats
    assert len(tcp_app.accepted_inodes) == tcp_app.in_flight == 2
    assert all(inode for inode in tcp_app.accepted_inodes)
    (unix_app,) = listener_stats([], fixture_unix(), [parse_bind(MANIFEST['unix_app']['address'])])
    assert len(unix_app.accepted_inodes) == unix_app.in_flight == 1


def test_a_row_seen_twice_is_one_connection():
    # A table read in several passes may repeat a row when sockets move between the passes.
    rows = fixture_tcp()
    (once,) = listener_stats(rows, [], [parse_bind(MANIFEST['tcp_app']['address'])])
    (twice,) = listener_stats(rows + rows[4:], [], [parse_bind(MANIFEST['tcp_app']['address'])])
    assert twice.in_flight == once.in_flight
