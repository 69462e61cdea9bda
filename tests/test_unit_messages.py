"""What the user is told about a control socket: each sentence true for how the socket was found."""

from __future__ import annotations

from datadog_checks.gunicorn.collectors.discovery import AppTree
from datadog_checks.gunicorn.messages import control_socket_problem
from datadog_checks.gunicorn.sources.control_socket.client import SocketMissing
from datadog_checks.gunicorn.sources.control_socket.locate import Candidate, Unverified, WrongMaster
from datadog_checks.gunicorn.sources.procfs import Stat


def tree(pid: int, name: str) -> AppTree:
    return AppTree(Stat(pid, 'gunicorn: maste', 'S', 1, 0, 0, 1, 1000, 1), name=name)


def answered_by(pid: int, app: str | None, own: bool = True) -> Unverified:
    error = WrongMaster('/run/app.ctl', 100, pid, app)
    error.candidate = Candidate('/run/app.ctl', '/run/app.ctl', 'a test', own)
    return Unverified([error])


def test_two_masters_of_one_app_without_the_option_are_not_told_to_remove_it():
    first, second = tree(100, 'web'), tree(200, 'web')
    text = control_socket_problem(answered_by(200, 'web'), first, [first, second], configured=False)
    assert 'remove the option' not in text and 'the two masters share one path' in text
    text = control_socket_problem(answered_by(200, 'web'), first, [first, second], configured=True)
    assert 'remove the option' in text


def test_a_configured_socket_answered_by_another_app_blames_the_option_not_gunicorns_default():
    web = tree(100, 'web')
    text = control_socket_problem(answered_by(300, 'billing'), web, [web], configured=True)
    assert "Gunicorn's default" not in text and 'control_socket /run/app.ctl is answered by pid 300' in text
    text = control_socket_problem(answered_by(300, 'billing'), web, [web], configured=False)
    assert "Gunicorn's default" in text


def test_a_socket_answered_by_another_app_at_a_guessed_path_is_not_warned_about():
    web = tree(100, 'web')
    error = answered_by(300, 'billing', own=False)
    assert isinstance(error.telling, SocketMissing) and not error.tied
    assert control_socket_problem(error, web, [web], configured=False) is None


def test_a_whole_title_or_a_module_without_its_callable_gets_a_did_you_mean():
    from datadog_checks.gunicorn.collectors.discovery import Sightings
    from datadog_checks.gunicorn.messages import closest_names, explain_missing

    names = ['shop-api', 'web3:application', 'billing']
    assert closest_names('gunicorn: master [shop-api]', names) == ['shop-api']
    assert closest_names('web3', names) == ['web3:application']
    assert closest_names('shop-apj', names) == ['shop-api']
    seen = Sightings()
    seen.titled['web3:application'] = [100]
    assert 'Did you mean `web3:application`?' in explain_missing('web3', seen)


def test_a_pid_file_that_finds_nothing_keeps_the_configured_tags_on_the_service_check(aggregator, dd_run_check):
    from datadog_checks.base import AgentCheck
    from datadog_checks.gunicorn import GunicornCheck

    check = GunicornCheck('gunicorn', {}, [{'pid_file': '/nonexistent/web3.pid', 'tags': ['team:web']}])
    dd_run_check(check)
    (sc,) = aggregator.service_checks('gunicorn.is_running')
    assert (sc.status, sc.tags) == (AgentCheck.CRITICAL, ['team:web'])
    assert '?.' not in sc.message
