"""What the host and the server say, each fact read in one place: /proc, socket tables, the control socket,
command lines, pid files, process titles and the Gunicorn version."""
