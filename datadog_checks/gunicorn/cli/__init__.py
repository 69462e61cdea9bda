"""Command-line tools: the runner (`python -m datadog_checks.gunicorn`) and `diagnose`. They import the check's
modules; the check never imports them."""
