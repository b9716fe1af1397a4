"""An error reporter plugin, as django-q-sentry is one: a class registered in `djangoq.errorreporters`.

Its dist-info beside this module registers it as `filelog`; a test puts this
folder on sys.path (or PYTHONPATH) to install it. Each report() appends one
JSON line to `path`: the exception being handled (sys.exc_info(), which is
what the Sentry and Rollbar plugins read), the options it was made with, and
the process that reported.
"""

import json
import os
import sys


class FileReporter:
    def __init__(self, path, **options):
        self.path = path
        self.options = options

    def report(self):
        kind, error, _ = sys.exc_info()
        line = {"type": kind.__name__ if kind else None, "message": str(error), "pid": os.getpid(),
                "options": self.options}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


class BrokenReporter:
    """Made fine, fails on every report (a reporter that is down must not stop the cluster)."""

    def __init__(self, **options):
        pass

    def report(self):
        raise RuntimeError("reporter down")


class PickyReporter:
    """Refuses its options, as a plugin given a bad DSN does."""

    def __init__(self, **options):
        raise ValueError(f"bad options {sorted(options)}")
