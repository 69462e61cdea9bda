"""The package's metadata: pyproject.toml, setup.py, the licence, the manifest's author and the declared dependencies.

The metadata lives in pyproject.toml's [project] table, the one place `ddev validate package` reads. setup.py stays for
the build layout, and setuptools treats a metadata field it passes in one of three ways: a field [project] declares
`dynamic` is taken from setup.py; a field [project] sets is overwritten by [project] (with a warning for a few, silently
for most); any other field is dropped with a warning. Only the first does what it says, so these tests allow no other.
setup.py runs here with `setuptools.setup` replaced, so no build starts.

Runtime dependencies follow the Agent's rule: the wheel is installed without them, so whatever the package imports
must already be in the Agent's Python, which carries datadog-checks-base with its `deps` extra. The package declares in
its own `deps` extra only what it imports beyond that, and nothing it does not import.
"""

from __future__ import annotations

import ast
import json
import re
import runpy
import sys
import tomllib
from email.headerregistry import Address
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from datadog_checks.gunicorn.__about__ import __version__

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text(encoding='utf-8'))
PROJECT = PYPROJECT['project']
MANIFEST = json.loads((REPO / 'manifest.json').read_text(encoding='utf-8'))
CHECK = 'gunicorn'
PACKAGE_DIR = REPO / 'datadog_checks' / CHECK

# setup() keyword -> the [project] field setuptools maps it to (setuptools/config/_apply_pyprojecttoml.py,
# `_PREVIOUSLY_DEFINED`, plus the keywords that field reads from).
SETUP_METADATA_FIELDS = {
    'name': 'name',
    'version': 'version',
    'description': 'description',
    'long_description': 'readme',
    'long_description_content_type': 'readme',
    'python_requires': 'requires-python',
    'license': 'license',
    'license_expression': 'license',
    'license_files': 'license-files',
    'author': 'authors',
    'author_email': 'authors',
    'maintainer': 'maintainers',
    'maintainer_email': 'maintainers',
    'keywords': 'keywords',
    'classifiers': 'classifiers',
    'url': 'urls',
    'project_urls': 'urls',
    'entry_points': 'entry-points',
    'scripts': 'scripts',
    'install_requires': 'dependencies',
    'extras_require': 'optional-dependencies',
}
# Domains reserved for examples and tests (RFC 2606, RFC 6761): an address there reaches nobody.
PLACEHOLDER_DOMAIN = re.compile(r'(^|\.)(example(\.(com|net|org))?|invalid|test|localhost)$', re.IGNORECASE)
PYTHON_CLASSIFIER = re.compile(r'Programming Language :: Python :: (\d+)\.(\d+)')
# Modules the package imports that no distribution provides.
NOT_FROM_A_DISTRIBUTION = {
    'datadog_checks',  # this package's namespace, shared with datadog-checks-base
    'datadog_agent',  # built into the Agent; outside it the code falls back to datadog_checks.base.stubs
}


@pytest.fixture(scope='module')
def setup_kwargs() -> dict[str, Any]:
    captured: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
        runpy.run_path(str(REPO / 'setup.py'), run_name='__main__')
    assert captured, 'setup.py did not call setuptools.setup()'
    return captured


def test_setup_py_passes_only_the_metadata_pyproject_leaves_dynamic(setup_kwargs):
    dynamic = set(PROJECT.get('dynamic', []))
    for keyword in setup_kwargs.keys() & SETUP_METADATA_FIELDS.keys():
        field = SETUP_METADATA_FIELDS[keyword]
        assert field in dynamic, (
            'setup.py passes `%s`, but pyproject.toml does not declare `%s` dynamic: setuptools ignores the value '
            'from setup.py (set it in [project] instead)' % (keyword, field)
        )
    for field in dynamic:
        assert field not in PROJECT, 'pyproject.toml sets `%s` and declares it dynamic' % field


def test_the_version_is_the_one_the_check_reports(setup_kwargs):
    assert 'version' in PROJECT['dynamic']
    assert setup_kwargs['version'] == __version__
    # `ddev validate package` requires this exact path, although setuptools never reads it.
    assert PYPROJECT['tool']['hatch']['version']['path'] == 'datadog_checks/%s/__about__.py' % CHECK


def test_the_name_is_the_one_the_agent_installs_under():
    # `datadog-agent integration install` and `ddev validate package` both expect datadog-<check>.
    assert canonicalize_name(PROJECT['name']) == 'datadog-%s' % CHECK


def test_the_only_hard_dependency_is_a_lower_bound_on_the_base_package():
    # The Agent refuses a wheel without it and installs with --no-deps; ddev wants `>=` on the base and nothing else.
    (requirement,) = [Requirement(r) for r in PROJECT['dependencies']]
    assert canonicalize_name(requirement.name) == 'datadog-checks-base'
    assert [s.operator for s in requirement.specifier] == ['>=']


def test_the_licence_file_is_the_declared_licence_with_the_authors_as_holder():
    assert PROJECT['license'] == 'BSD-3-Clause'
    assert PROJECT['license-files'] == ['LICENSE']
    text = (REPO / 'LICENSE').read_text(encoding='utf-8')
    (author,) = PROJECT['authors']
    assert re.match(r'Copyright \(c\) \d{4} %s\.\n' % re.escape(author['name']), text)
    assert '3. Neither the name of the copyright holder nor the names of its' in text
    # setuptools 77+ refuses licence classifiers beside an SPDX expression.
    assert not [c for c in PROJECT['classifiers'] if c.startswith('License ::')]


def test_the_python_classifiers_are_versions_the_package_accepts():
    floor = tuple(int(p) for p in re.fullmatch(r'>=(\d+)\.(\d+)', PROJECT['requires-python']).groups())
    versions = [m.groups() for c in PROJECT['classifiers'] if (m := PYTHON_CLASSIFIER.fullmatch(c))]
    assert versions
    for version in versions:
        assert tuple(int(p) for p in version) >= floor, '.'.join(version)


def test_no_author_contact_is_a_placeholder():
    addresses = [a['email'] for a in PROJECT['authors'] if 'email' in a]
    addresses += [v for k, v in MANIFEST['author'].items() if k.endswith('_email')]
    for address in addresses:
        domain = Address(addr_spec=address).domain
        assert not PLACEHOLDER_DOMAIN.search(domain), 'placeholder address: %s' % address
    homepage = MANIFEST['author'].get('homepage')
    assert homepage is None or not PLACEHOLDER_DOMAIN.search(re.sub(r'^https?://([^/:]+).*', r'\1', homepage))


def test_the_manifest_and_the_package_name_the_same_author():
    assert [a['name'] for a in PROJECT['authors']] == [MANIFEST['author']['name']]


def test_the_wheel_lists_every_package_under_the_check(setup_kwargs):
    # setup.py lists packages by hand so that datadog_checks/__init__.py, which datadog-checks-base owns, is not
    # shipped; a subpackage left off that list is silently missing from the wheel.
    on_disk = {'.'.join(init.parent.relative_to(REPO).parts) for init in PACKAGE_DIR.rglob('__init__.py')}
    listed = set(setup_kwargs['packages'])
    assert not on_disk - listed, 'packages missing from setup.py, so from the wheel: %s' % sorted(on_disk - listed)
    assert not listed - on_disk, 'setup.py lists packages that do not exist: %s' % sorted(listed - on_disk)


def _imported_top_level_modules() -> set[str]:
    modules = set()
    for source in PACKAGE_DIR.rglob('*.py'):
        for node in ast.walk(ast.parse(source.read_bytes(), filename=str(source))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.partition('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition('.')[0])
    return modules - set(sys.stdlib_module_names) - NOT_FROM_A_DISTRIBUTION


def _extra_requirements(distribution: str, extra: str) -> set[str]:
    names = set()
    for line in metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker and requirement.marker.evaluate({'extra': extra}):
            names.add(canonicalize_name(requirement.name))
    return names


def _own_extra(extra: str) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in PROJECT['optional-dependencies'][extra]}


def test_every_import_is_provided_by_the_base_deps_or_our_own():
    provided = _extra_requirements('datadog-checks-base', 'deps') | _own_extra('deps')
    distributions = metadata.packages_distributions()
    for module in sorted(_imported_top_level_modules()):
        names = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert names, 'the package imports `%s`, which no installed distribution provides' % module
        assert names & provided, (
            'the package imports `%s` (%s), which datadog-checks-base[deps] does not provide: add it to the `deps` '
            'extra in pyproject.toml, pinned to the version the Agent ships' % (module, ', '.join(sorted(names)))
        )


def test_every_declared_extra_is_imported():
    imported = {
        canonicalize_name(d)
        for module in _imported_top_level_modules()
        for d in metadata.packages_distributions().get(module, [])
    }
    for extra in PROJECT['optional-dependencies']:
        unused = _own_extra(extra) - imported
        assert not unused, 'the `%s` extra declares %s, which the package never imports' % (extra, sorted(unused))
