"""A per-invocation view of ``os.environ`` for handlers that run in one shared process.

On Lambda every function has its own process, so ``os.environ`` *is* the function's
configuration. Here several functions run at once in one process, and triggers nest (a put
from one handler runs a stream handler inside that request), so setting ``os.environ`` per
call would leak one function's tables into another's. Instead the existing ``os.environ``
object is turned, in place, into an overlay: reads look first at the environment of the
invocation running in the current thread/context (a ``ContextVar``), then at the real
environment. Changing the class of the existing object (rather than rebinding ``os.environ``)
means every holder of a reference sees the overlay: ``os.getenv``, modules that did
``from os import environ``, and botocore's providers, which keep the mapping they were given.

Writes inside an invocation go to that function's environment (its "container"), never to
the process. Threads started by a handler begin with an empty context and so see only the
real environment: a documented limit (``contextvars`` do not cross into new threads).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar

UNSET = object()
_current: ContextVar[MutableMapping[str, object] | None] = ContextVar(
    "yilian_local_environ", default=None
)


class OverlayEnviron(os._Environ):  # type: ignore[name-defined,misc]
    """``os._Environ`` whose reads and writes honour the invocation environment in context."""

    def __getitem__(self, key: str) -> str:
        env = _current.get()
        if env is not None and key in env:
            value = env[key]
            if value is UNSET:
                raise KeyError(key)
            return value  # type: ignore[return-value]
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: str) -> None:
        env = _current.get()
        if env is None:
            super().__setitem__(key, value)
            return
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"str expected, not {type(value).__name__}")
        env[key] = value

    def __delitem__(self, key: str) -> None:
        env = _current.get()
        if env is None:
            super().__delitem__(key)
            return
        if key not in self:
            raise KeyError(key)
        env[key] = UNSET

    def __iter__(self) -> Iterator[str]:
        env = _current.get()
        if env is None:
            yield from super().__iter__()
            return
        overlay = dict(env)
        for key in super().__iter__():
            if key not in overlay:
                yield key
        for key, value in overlay.items():
            if value is not UNSET:
                yield key

    def __len__(self) -> int:
        if _current.get() is None:
            return super().__len__()
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def __repr__(self) -> str:
        return f"environ({dict(self)!r})"


def install() -> None:
    """Turn ``os.environ`` into the overlay, once per process (idempotent)."""
    if not isinstance(os.environ, OverlayEnviron):
        os.environ.__class__ = OverlayEnviron


def installed() -> bool:
    return isinstance(os.environ, OverlayEnviron)


@contextmanager
def invocation_environ(env: MutableMapping[str, object]) -> Iterator[None]:
    """Make ``env`` the environment seen by ``os.environ`` in this context, then restore.

    Nested uses (a trigger running a handler inside another) each see their own mapping and
    the outer one is back in force when the inner one returns.
    """
    install()
    token = _current.set(env)
    try:
        yield
    finally:
        _current.reset(token)
