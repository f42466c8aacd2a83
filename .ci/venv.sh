# Sourced by .ci/run: a virtual environment outside the clone, so a second CI run (or a fresh clone with the
# same dependencies) skips the ~3 GB torch install. Sets VENV.
#
# Two modes:
#   locked (default): the exact versions in .ci/constraints.txt, the ones the suite last passed with. The
#     venv is keyed on the hash of pyproject.toml and the lock together, so it is rebuilt only when one of
#     them changes, and a new release on PyPI never changes what CI tests.
#   latest (ESRERANK_CI_LATEST=1, what `bash .ci/run --latest` sets): the newest versions pyproject.toml's
#     ranges allow, no lock; the venv is upgraded in place each time (eager: dependencies of dependencies
#     too), so drift is found on purpose. Its `pip freeze` is left in $VENV/freeze.txt for a new lock.
root="${ESRERANK_VENV_ROOT:-$HOME/.cache/esrerank-ci}"
if [ "${ESRERANK_CI_LATEST:-0}" = 1 ]; then
    VENV="$root/venv-latest"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q --upgrade --upgrade-strategy eager -e ".[test]"
else
    hash=$(cat pyproject.toml .ci/constraints.txt | sha256sum | cut -c1-16)
    VENV="$root/venv-$hash"
    if [ ! -f "$VENV/.complete" ]; then
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -c .ci/constraints.txt -e ".[test]"
        touch "$VENV/.complete"
    else
        # The editable install points at the clone it was made from; re-point it at this clone (fast, no deps).
        "$VENV/bin/pip" install -q --no-deps -e .
    fi
fi
# What the tests run against, in the log: every installed distribution and its version (pip freeze, less
# the editable esrerank itself).
"$VENV/bin/pip" freeze --exclude-editable > "$VENV/freeze.txt"
export VENV
