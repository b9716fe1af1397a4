"""The modules a forked worker takes as known (Config.preload_tasks): filled by the sentinel, before it forks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter, since the probe fills the worker module's globals as the sentinel would.
PROBE = """
import json, shutil, sys
import django
django.setup()
from django_q.cluster import worker
from django_q.cluster.channels import encode_module, task_modules_path
from django_q.cluster.sentinel import Sentinel
from django_q.conf import build_config
sentinel = Sentinel(build_config(), start_method="fork")
sentinel._preload()
before_fork = set(sys.modules) <= worker._known_modules and worker._inherited
assert "colorsys" not in sys.modules
with open(task_modules_path(sentinel.dir), "w") as f:
    f.write(encode_module("colorsys"))  # a worker ran a task of it
sentinel._preload_tasks()
shutil.rmtree(sentinel.dir)
print(json.dumps([before_fork, "colorsys" in worker._known_modules]))
"""


def test_the_sentinel_fills_the_known_modules_before_it_forks_and_adds_each_task_module_it_preloads():
    # Filled in each worker instead, the set wrote a reference count to every
    # inherited module's name: ~0.6 MiB of copied pages per idle worker.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True]
