#!/usr/bin/env bash
# The release check (`make release-check`, a step of .ci/run): build the sdist
# and the wheel, `twine check --strict` them, install the wheel (not this
# checkout) into a fresh virtualenv, and run the demo against it from a copy
# of example/ outside the repository, so that nothing can import the work tree.
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

echo "==> installing the wheel into a fresh virtualenv"
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q dist/*.whl 2>&1 | sed '/is ignored: it is neither a file nor a directory/d'
cp -r example "$tmp/example"
rm -f "$tmp/example/db.sqlite3"*
where=$(cd "$tmp" && "$tmp/venv/bin/python" -c 'import django_q; print(django_q.__file__)')
case "$where" in
    "$tmp/venv/"*) echo "django_q imported from $where" ;;
    *) echo "django_q imported from $where, not from the installed wheel" >&2; exit 1 ;;
esac

echo "==> the demo against the installed wheel"
(cd "$tmp" && DEMO_DB="$tmp/demo.sqlite3" DEMO_ORDERS=${DEMO_ORDERS:-100} "$tmp/venv/bin/python" example/run_demo.py)
