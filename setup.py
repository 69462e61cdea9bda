import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ABOUT = {}
exec((HERE / 'datadog_checks' / 'gunicorn' / '__about__.py').read_text(), ABOUT)

# The files `python -m datadog_checks.gunicorn assets install` sends to Datadog, copied into the wheel under
# datadog_checks/gunicorn/assets/ so that the installer also runs from an installed wheel (the Agent's own Python, a
# custom Agent image). The repository's assets/ folder stays their only source; nothing is copied into the source tree.
# Same list as SHIPPED in datadog_checks/gunicorn/cli/assets/files.py, which cannot be imported here (a test compares).
SHIPPED_ASSETS = ('dashboards', 'monitors', 'logs/gunicorn.yaml', 'saved_views')


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        # An editable install runs from the repository, where the installer reads assets/ itself.
        if getattr(self, 'editable_mode', False):
            return
        target = Path(self.build_lib) / 'datadog_checks' / 'gunicorn' / 'assets'
        # setuptools reuses a build/ folder left from an earlier build: a file deleted from assets/ since must not ship.
        shutil.rmtree(target, ignore_errors=True)
        for relative in SHIPPED_ASSETS:
            source = HERE / 'assets' / relative
            if not source.exists():
                raise FileNotFoundError('%s is missing: build the wheel from a clone of the repository' % source)
            destination = target / relative
            if source.is_dir():
                shutil.copytree(source, destination, dirs_exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination)


# The metadata is in pyproject.toml's [project] table; setuptools would ignore a copy here. The version is the one
# field that table declares dynamic, so it comes from here, read from the module the check reports it from.
setup(
    version=ABOUT['__version__'],
    # Every package under the check; datadog_checks itself belongs to datadog-checks-base.
    packages=find_packages(include=['datadog_checks.gunicorn', 'datadog_checks.gunicorn.*']),
    package_data={'datadog_checks.gunicorn': ['data/conf.yaml.example']},
    include_package_data=True,
    zip_safe=False,
    cmdclass={'build_py': BuildPyWithAssets},
)
