#!/usr/bin/env bash
# The release check (`make release-check`, a step of .ci/run): build the sdist
# and the wheel, `twine check --strict` them, install the wheel (not this
# checkout) WITHOUT extras into a fresh virtualenv, and run .ci/release_smoke.py
# against it (the database broker on SQLite: Django is all it needs) in a copy
# of example/ outside the repository, so that nothing can import the work tree.
# Then add the [all] extra and run the demo on the database broker and, shorter,
# on the Redis broker (Redis on 127.0.0.1:6379, db 13 unless DEMO_REDIS says).
#
#   PYTHON=.venv312/bin/python bash .ci/release_check.sh
#
# PYTHON needs `build` and `twine` (the [release] extra); the fresh virtualenv
# is made with the same interpreter. Leaves dist/ (and the demo's log in /tmp).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv312/bin/python}
tmp=$(mktemp -d /tmp/django_q_release.XXXX)
trap 'rm -rf "$tmp"' EXIT

echo "==> building the sdist and the wheel"
rm -rf dist
"$PYTHON" -m build --sdist --wheel --outdir dist . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
ls -l dist

echo "==> twine check"
"$PYTHON" -m twine check --strict dist/*

echo "==> what the wheel holds"
"$PYTHON" - dist/*.whl <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["django_q/py.typed", "django_q/static/django_q/dashboard.js", "django_q/migrations/0001_initial.py"]
missing = [n for n in need if n not in names]
license_files = [n for n in names if n.endswith("/licenses/LICENSE")]
stray = [n for n in names if n.split("/")[0] in ("tests", "docs", "example", "bench")]
if missing or not license_files or stray:
    sys.exit(f"wheel: missing {missing}, LICENSE {license_files}, stray {stray[:5]}")
print(f"{len(names)} files; py.typed, static files, migrations and LICENSE are in it")
PY

echo "==> installing the wheel, without extras, into a fresh virtualenv"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q dist/*.whl 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
extra=$("$tmp/venv/bin/python" -m pip list --format=freeze 2>/dev/null \
    | grep -iE '^(redis|rich|psutil|setproctitle|prometheus.client|croniter)==' || true)
if [ -n "$extra" ]; then
    echo "installed without extras, yet it brought: $extra" >&2
    exit 1
fi
cp -r example "$tmp/example"
rm -f "$tmp/example/db.sqlite3"*
where=$(cd "$tmp" && "$tmp/venv/bin/python" -c 'import django_q; print(django_q.__file__)')
case "$where" in
    "$tmp/venv/"*) echo "django_q imported from $where" ;;
    *) echo "django_q imported from $where, not from the installed wheel" >&2; exit 1 ;;
esac

echo "==> without extras: check, migrate, a cluster on the database broker (SQLite), a task, a schedule, the admin"
cp .ci/release_smoke.py "$tmp/example/"
(cd "$tmp/example" && DEMO_DB="$tmp/smoke.sqlite3" "$tmp/venv/bin/python" release_smoke.py)

echo "==> with the [all] extra: the demo, on the database broker, then on the Redis broker"
"$tmp/venv/bin/python" -m pip install -q "$(ls dist/*.whl)[all]" 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
(cd "$tmp" && DEMO_DB="$tmp/demo.sqlite3" DEMO_ORDERS=${DEMO_ORDERS:-100} "$tmp/venv/bin/python" example/run_demo.py)
(cd "$tmp" && DEMO_DB="$tmp/demo_redis.sqlite3" DEMO_ORDERS=${DEMO_REDIS_ORDERS:-50} \
    DEMO_REDIS=${DEMO_REDIS:-redis://127.0.0.1:6379/13} DEMO_QUEUE="release$$" \
    "$tmp/venv/bin/python" example/run_demo.py)
