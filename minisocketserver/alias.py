"""Stand in for stdlib's ``socketserver``: ``install()`` and ``run``.

``http.server``, ``xmlrpc.server``, ``wsgiref.simple_server``,
``logging.config.listen()`` and third-party code all subclass stdlib's
classes by name: ``import socketserver`` at the top of their module.  To
run them on this package no line of theirs changes; the name does.
``install()`` binds ``sys.modules["socketserver"]`` to this package, so
every later ``import socketserver`` (and ``from socketserver import ...``)
gets our classes.  ``python -m minisocketserver run -m MODULE`` (or ``run
SCRIPT``) does that first and then runs the target as ``python -m MODULE``
(or ``python SCRIPT``) would, in the manner of ``python -m gevent.monkey``.

The one rule is import order.  A module that imported stdlib's
``socketserver`` before the alias keeps stdlib's classes: its ``class
HTTPServer(socketserver.TCPServer)`` statement has already run, and
rebinding a name in ``sys.modules`` cannot reach back into it.  So
``install()`` refuses, naming the modules that hold stdlib's classes,
rather than leave a program half on one implementation and half on the
other without saying so.
"""

from __future__ import annotations

import os
import runpy
import sys
import warnings
import zipfile
from collections.abc import Sequence
from types import ModuleType

#: The name this package stands in for.
STDLIB_NAME = "socketserver"


class AliasError(RuntimeError):
    """``install()`` came too late: stdlib's ``socketserver`` is in use."""


def _package() -> ModuleType:
    return sys.modules[__name__.rpartition(".")[0]]


def stdlib_holders() -> list[str]:
    """The loaded modules that hold stdlib's ``socketserver`` or its classes.

    Called by ``install()`` to name them; public so that a program can ask
    before it decides.  A module holds stdlib's through ``import
    socketserver`` (a global bound to the module, as in ``http.server``),
    ``from socketserver import ...`` (a global bound to a class whose
    ``__module__`` says where it was defined; ours say
    ``minisocketserver.*``; as in ``logging.config``) or a class built on
    one of those (``from http.server import HTTPServer``).  ``socketserver``
    itself is not listed: it is what is held.
    """
    ours = _package()
    holders = []
    # list(): another thread may import while we look.
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if name == STDLIB_NAME or module is ours or not isinstance(namespace, dict):
            continue
        for value in list(namespace.values()):
            if isinstance(value, ModuleType):
                held = value.__name__ == STDLIB_NAME
            else:
                held = isinstance(value, type) and any(
                    base.__module__ == STDLIB_NAME for base in value.__mro__)
            if held:
                holders.append(name)
                break
    return sorted(holders)


def install(*, strict: bool = True) -> None:
    """Make every later ``import socketserver`` import this package.

    Called by a program that starts itself, before it imports
    ``http.server``, ``xmlrpc.server``, ``wsgiref.simple_server``,
    ``logging.config`` or anything else built on ``socketserver``; and by
    ``python -m minisocketserver run`` before it runs its target.
    Idempotent: a second call does nothing.

    If stdlib's ``socketserver`` is already imported, the modules that
    imported it keep stdlib's classes.  Then ``install()`` raises
    ``AliasError`` (a ``RuntimeError``) naming them, or, with
    ``strict=False``, installs the alias for later imports and warns with
    a ``RuntimeWarning`` naming them.
    """
    ours = _package()
    current = sys.modules.get(STDLIB_NAME)
    if current is ours:
        return
    holders = stdlib_holders()
    if current is not None or holders:
        kept = (f"these modules keep stdlib's classes: {', '.join(holders)}" if holders
                else "whatever imported it keeps stdlib's classes")
        message = (f"stdlib's {STDLIB_NAME} was imported before "
                   f"{ours.__name__}.install(), so {kept}")
        if strict:
            raise AliasError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    sys.modules[STDLIB_NAME] = ours


def run_module(name: str, args: Sequence[str]) -> None:
    """Run module ``name`` as ``python -m name args...`` would, on this package.

    Called by ``python -m minisocketserver run -m``, after ``install()``.
    ``sys.path[0]`` is already what ``python -m`` puts there (the current
    directory, unless ``-P``), since that is how this package was started.
    The target's exceptions, ``SystemExit`` included, propagate unchanged:
    the interpreter reports them as it would for ``python -m name``.
    """
    sys.argv = [name, *args]  # runpy replaces argv[0] with the module's file
    runpy.run_module(name, run_name="__main__", alter_sys=True)


def run_path(path: str, args: Sequence[str]) -> None:
    """Run script ``path`` as ``python path args...`` would, on this package.

    Called by ``python -m minisocketserver run SCRIPT``, after
    ``install()``.  ``python SCRIPT`` puts the script's directory first on
    ``sys.path`` where ``python -m`` put the current directory; a directory
    or zip file with a ``__main__.py`` is itself that entry, which
    ``runpy.run_path`` inserts.  With ``-P`` (``sys.flags.safe_path``)
    python adds neither, and neither do we.
    """
    if not getattr(sys.flags, "safe_path", False) and sys.path:
        if os.path.isdir(path) or zipfile.is_zipfile(path):
            del sys.path[0]
        else:
            sys.path[0] = os.path.dirname(os.path.realpath(path))
    sys.argv = [path, *args]
    runpy.run_path(path, run_name="__main__")
