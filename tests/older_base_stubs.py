"""The aggregator stub's assertions as the newest datadog-checks-base has them, for the tests on older bases.

The stub that records what a check submits ships in datadog-checks-base itself, so the Agents' environments
(tox agent751, agent758) test with that base's stub. Two assertions the tests use differ there: bases 35.0.1 and
37.0.0 compare `assert_service_check`'s `message` for equality where the newest searches it as a regular expression,
and 35.0.1 has no `assert_service_checks` (every submitted status declared in service_checks.json).
`newest_assertions` gives the tests the newest behaviour on every base; on a base that already asserts so, the stub is
returned as it is.
"""

from __future__ import annotations

import re

from datadog_checks.base.constants import ServiceCheck
from datadog_checks.base.stubs.aggregator import AggregatorStub, normalize_tags
from datadog_checks.base.stubs.common import ServiceCheckStub


class _NewestAssertions:
    def __init__(self, stub: AggregatorStub) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> object:
        return getattr(self._stub, name)

    def assert_service_check(self, name, status=None, tags=None, count=None, at_least=1, hostname=None, message=None):
        wanted_tags = normalize_tags(tags, sort=True)
        matching = [
            sc
            for sc in self._stub.service_checks(name)
            if (status is None or sc.status == status)
            and (not wanted_tags or sorted(sc.tags) == wanted_tags)
            and (hostname is None or sc.hostname == hostname)
            and (message is None or re.search(message, sc.message) is not None)
        ]
        if count is not None:
            condition, need = len(matching) == count, 'exactly %d' % count
        else:
            condition, need = len(matching) >= at_least, 'at least %d' % at_least
        self._stub._assert(
            condition=condition,
            msg='Needed %s candidates for %r, got %d' % (need, name, len(matching)),
            expected_stub=ServiceCheckStub(None, name, status, wanted_tags, hostname, message),
            submitted_elements=self._stub._service_checks,
        )

    def assert_service_checks(self, service_checks: list[dict]) -> None:
        declared = {sc['check']: set(sc['statuses']) for sc in service_checks}
        status_names = {value: key.lower() for key, value in ServiceCheck._asdict().items()}
        errors = set()
        for name, submitted in self._stub._service_checks.items():
            if name not in declared:
                errors.add('Expect `%s` to be in service_check.json.' % name)
                continue
            for status in {status_names[sc.status] for sc in submitted} - declared[name]:
                errors.add('Expect `%s` value to be in service_check.json for service check %s.' % (status, name))
        assert not errors, 'Service checks assertion errors using service_checks.json:' + ''.join(
            '\n\t- %s' % e for e in sorted(errors)
        )


def _asserts_as_the_newest() -> bool:
    """Whether this base's stub already searches messages as patterns and has `assert_service_checks`."""
    probe = AggregatorStub()
    probe.submit_service_check(None, None, 'probe', ServiceCheck.CRITICAL, [], '', 'abc')
    try:
        probe.assert_service_check('probe', message='a.c')
    except AssertionError:
        return False
    return hasattr(probe, 'assert_service_checks')


ASSERTS_AS_THE_NEWEST = _asserts_as_the_newest()


def newest_assertions(stub: AggregatorStub) -> AggregatorStub:
    return stub if ASSERTS_AS_THE_NEWEST else _NewestAssertions(stub)  # type: ignore[return-value]
