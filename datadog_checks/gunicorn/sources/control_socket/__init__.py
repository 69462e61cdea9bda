"""Gunicorn's control socket (25.1+): the read-only client (client.py), where a master's socket is and whether the
master answers there (locate.py), what the replies say (replies.py), and the per-master monitor (monitor.py)."""
