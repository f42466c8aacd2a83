# Sourced by .ci/run: a virtual environment outside the clone, keyed on pyproject.toml's hash, so a
# second CI run (or a fresh clone with the same dependencies) skips the ~3 GB torch install.
hash=$(sha256sum pyproject.toml | cut -c1-16)
VENV="${ESRERANK_VENV_ROOT:-$HOME/.cache/esrerank-ci}/venv-$hash"
if [ ! -f "$VENV/.complete" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e ".[test]"
    touch "$VENV/.complete"
else
    # The editable install points at the clone it was made from; re-point it at this clone (fast, no deps).
    "$VENV/bin/pip" install -q --no-deps -e .
fi
export VENV
