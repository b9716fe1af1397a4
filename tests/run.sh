#!/usr/bin/env bash
# `make test`: the test suite on every interpreter in $PY, side by side.
#
#   PY="311 312" TESTS="" WORKERS=3 bash tests/run.sh [pytest arguments...]
#
# One lane per interpreter; the lanes run at once, since the tests mostly wait
# on clusters and servers rather than on the CPU. A lane runs the suite (or
# $TESTS) in $WORKERS pytest-xdist processes and then, when $TESTS and
# $DQ_DEFAULT_DB are not given, the tests that depend on the default database
# again with PostgreSQL and then with MariaDB as the default (DQ_DEFAULT_DB,
# tests/settings.py). Every run has its own DQ_TEST_ID and scratch folder, and
# every xdist worker adds its own id to both, so nothing shares a database,
# a cluster name or a file. With one lane the output streams; with more, each
# lane's log is printed whole once it ended, in the order of $PY. Every run
# goes ahead even if another failed; the exit status is 1 if any failed.
set -uo pipefail

cd "$(dirname "$0")/.."

PY=${PY:-311 312}
TESTS=${TESTS:-}
WORKERS=${WORKERS:-3}

# Where results, schedules and the database broker live: these tests run again
# with PostgreSQL (a cluster end to end, how results are written, sync mode)
# and with MariaDB (how results are written, sync mode) as the default database.
# tests/integration/conftest.py leaves out there what would repeat the SQLite run.
TESTS_PG="tests/integration tests/unit/test_recorder.py tests/unit/test_saver.py tests/unit/test_sync.py"
TESTS_MYSQL="tests/unit/test_recorder.py tests/unit/test_saver.py tests/unit/test_sync.py"

venv_of() { if [ "$1" = 311 ]; then echo .venv; else echo .venv312; fi; }

# run V LABEL DEFAULT_DB TESTS [pytest arguments...]: one pytest run; its exit status.
run() {
    local v=$1 label=$2 db=$3 tests=$4 venv id tmp rc=0
    shift 4
    venv=$(venv_of "$v")
    id="py${v}${db:+_$db}_$$"
    tmp=$(mktemp -d "/tmp/django_q_tests_${id}.XXXX")
    echo "==> pytest on $("$venv/bin/python" -c 'import sys, django; print("Python %d.%d, Django %s" % (*sys.version_info[:2], django.__version__))'), $label (DQ_TEST_ID=$id)"
    # shellcheck disable=SC2086  # $tests is a list of paths
    DQ_DEFAULT_DB=$db DQ_TEST_ID=$id DQ_TEST_TMP=$tmp \
        "$venv/bin/python" -m pytest -n "$WORKERS" --dist worksteal --durations=5 $tests "$@" || rc=$?
    rm -rf "$tmp"
    if [ "$rc" -ne 0 ]; then echo "==> py$v, $label: FAILED (exit $rc)"; fi
    return "$rc"
}

# lane V [pytest arguments...]: every run of one interpreter, one after another
# (at the same time they would put more cluster processes on 2 cores than the
# tests' bounded waits allow for).
lane() {
    local v=$1 failed=0
    shift
    if [ -n "$TESTS" ] || [ -n "${DQ_DEFAULT_DB:-}" ]; then
        run "$v" "${DQ_DEFAULT_DB:-sqlite} as the default database" "${DQ_DEFAULT_DB:-}" "${TESTS:-tests/}" "$@" || failed=1
    else
        run "$v" "SQLite as the default database" "" tests/ "$@" || failed=1
        run "$v" "PostgreSQL as the default database" pg "$TESTS_PG" "$@" || failed=1
        run "$v" "MariaDB as the default database" mysql "$TESTS_MYSQL" "$@" || failed=1
    fi
    return "$failed"
}

read -ra versions <<<"$PY"
failed=""
if [ "${#versions[@]}" -eq 1 ]; then
    lane "${versions[0]}" "$@" || failed=" py${versions[0]}"
else
    logs=$(mktemp -d /tmp/django_q_test_logs.XXXX)
    pids=()
    # A stop of this script stops its lanes (they share its process group).
    trap 'trap - INT TERM; kill 0' INT TERM
    for v in "${versions[@]}"; do
        lane "$v" "$@" >"$logs/py$v" 2>&1 &
        pids+=($!)
    done
    for i in "${!versions[@]}"; do
        v=${versions[$i]}
        wait "${pids[$i]}" || failed="$failed py$v"
        echo "==> log of py$v"
        cat "$logs/py$v"
    done
    rm -rf "$logs"
fi
if [ -n "$failed" ]; then
    echo "==> FAILED:$failed"
    exit 1
fi
echo "==> all test runs passed ($PY)"
