from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
ABOUT = {}
exec((HERE / 'datadog_checks' / 'gunicorn' / '__about__.py').read_text(), ABOUT)

# datadog-checks-base newer than 38.5.0 does not resolve from the registries these machines reach.
CHECKS_BASE_REQ = 'datadog-checks-base>=37.0.0'

setup(
    name='datadog-gunicorn',
    version=ABOUT['__version__'],
    description='The Gunicorn check for the Datadog Agent',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    keywords='datadog agent gunicorn check',
    license='BSD-3-Clause',
    packages=[
        'datadog_checks.gunicorn',
        'datadog_checks.gunicorn.cli',
        'datadog_checks.gunicorn.collectors',
        'datadog_checks.gunicorn.config_models',
        'datadog_checks.gunicorn.sources',
        'datadog_checks.gunicorn.sources.control_socket',
        'datadog_checks.gunicorn.sources.sockets',
    ],
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
)
