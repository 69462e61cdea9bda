"""`python -m datadog_checks.gunicorn assets`: the integration's dashboard, monitors and log pipeline into a Datadog
account through its public API (command.py), from the asset files (files.py) turned into request bodies (bodies.py)
and sent by a small client of the API (api.py)."""
