"""A dirty application (Gunicorn 25+): loaded once per dirty worker, outside the HTTP workers."""

try:
    from gunicorn.dirty.app import DirtyApp
except ImportError:  # older Gunicorn: never loaded there
    DirtyApp = object


class Tasks(DirtyApp):
    def init(self):
        self.calls = 0

    def __call__(self, action, *args, **kwargs):
        self.calls += 1
        return self.calls
