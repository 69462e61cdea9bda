from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
ABOUT = {}
exec((HERE / 'datadog_checks' / 'gunicorn' / '__about__.py').read_text(), ABOUT)

# The metadata is in pyproject.toml's [project] table; setuptools would ignore a copy here. The version is the one
# field that table declares dynamic, so it comes from here, read from the module the check reports it from.
setup(
    version=ABOUT['__version__'],
    # Every package under the check; datadog_checks itself belongs to datadog-checks-base.
    packages=find_packages(include=['datadog_checks.gunicorn', 'datadog_checks.gunicorn.*']),
    package_data={'datadog_checks.gunicorn': ['data/conf.yaml.example']},
    include_package_data=True,
    zip_safe=False,
)
