"""No bare raise of a builtin exception a user can reach: each is one of esrerank's errors (a one-line message
from the CLI) or a programming-error guard argued for in ``bare_raises.GUARDS`` (issue 39: this test replaces
running .ci/bare_raises.py by hand)."""

from bare_raises import GUARDS, bare_raises


def test_no_user_reachable_bare_raise_of_a_builtin_exception():
    rows = bare_raises()
    assert len(rows) >= 10  # the walk found the library's guards: it read the packages
    user = [f"{path}:{line}: {exc} in {qualname}: {message[:80]}"
            for path, line, exc, qualname, message, reason in rows if reason is None]
    assert not user, "raise an esrerank_errors class instead, or argue the guard into GUARDS:\n" + "\n".join(user)


def test_every_guard_still_guards_something():
    used = {(qualname, exc) for _, _, exc, qualname, _, reason in bare_raises() if reason}
    used |= {(qualname.rsplit(".<locals>.", 1)[-1], exc) for qualname, exc in used}
    stale = [key for key in GUARDS if key[0] != "*" and key not in used]
    assert not stale, f"guards for raises that are gone: {stale}"
