"""Serve one OpenStack WSGI application with gunicorn, from the command line.

    python -m capstan_lab.wsgi_run --bind 127.0.0.1:5000 --app keystone.wsgi.api:application \
        [--threads 8] [--name keystone] -- [argv for the application ...]

The services' WSGI modules read ``sys.argv`` (oslo.config), so the arguments after ``--`` are
what the application sees as its command line, not gunicorn's.
"""
import argparse
import importlib
import sys

from gunicorn.app.base import BaseApplication


class _App(BaseApplication):
    def __init__(self, target, options, app_argv, name):
        self.target = target
        self.options = options
        self.app_argv = app_argv
        self.name = name
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        sys.argv = [self.name] + self.app_argv
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr or "application")


def main():
    argv = sys.argv[1:]
    app_argv = []
    if "--" in argv:
        i = argv.index("--")
        argv, app_argv = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--app", required=True)
    p.add_argument("--name", default="wsgi")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=int, default=300)
    a = p.parse_args(argv)
    sys.argv = [a.name]
    _App(a.app, {
        "bind": a.bind,
        "workers": 1,
        "worker_class": "gthread",
        "threads": a.threads,
        "timeout": a.timeout,
        "graceful_timeout": 5,
        "proc_name": a.name,
        "accesslog": "-",
        "errorlog": "-",
    }, app_argv, a.name).run()


if __name__ == "__main__":
    main()
