import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ABOUT = {}
exec((HERE / 'datadog_checks' / 'gunicorn' / '__about__.py').read_text(), ABOUT)

# datadog-checks-base newer than 38.5.0 does not resolve from the registries these machines reach.
CHECKS_BASE_REQ = 'datadog-checks-base>=37.0.0'

# The files `python -m datadog_checks.gunicorn assets install` sends to Datadog, copied into the wheel under
# datadog_checks/gunicorn/assets/ so that the installer also runs from an installed wheel (the Agent's own Python, a
# custom Agent image). The repository's assets/ folder stays their only source; nothing is copied into the source tree.
# Same list as SHIPPED in datadog_checks/gunicorn/cli/asset_files.py, which cannot be imported here (a test compares).
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


setup(
    name='datadog-gunicorn',
    version=ABOUT['__version__'],
    description='The Gunicorn check for the Datadog Agent',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    keywords='datadog agent gunicorn check',
    license='BSD-3-Clause',
    packages=['datadog_checks.gunicorn', 'datadog_checks.gunicorn.config_models', 'datadog_checks.gunicorn.cli'],
    package_data={'datadog_checks.gunicorn': ['data/conf.yaml.example']},
    include_package_data=True,
    python_requires='>=3.11',
    install_requires=[CHECKS_BASE_REQ],
    extras_require={'deps': ['psutil>=5.9']},
    classifiers=[
        'Development Status :: 5 - Production/Stable',
        'Intended Audience :: System Administrators',
        'Operating System :: POSIX :: Linux',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.13',
        'Topic :: System :: Monitoring',
    ],
    zip_safe=False,
    cmdclass={'build_py': BuildPyWithAssets},
)
