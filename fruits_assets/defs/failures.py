"""Which failures Dagster retries: a step whose error cannot clear by running again fails at once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dagster import Failure

from spark_code.errors import PermanentError

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def permanent_failures() -> Iterator[None]:
    """Turn a PermanentError (bad data or settings, a missing upstream output) into Failure(allow_retries=False), so
    the retry policy spends its retries only on what may clear (storage, lost executors)."""
    try:
        yield
    except PermanentError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


def fail_at_once_when_permanent(compute: F) -> F:
    """An asset function whose PermanentErrors fail the step at once (see permanent_failures); generator functions
    stay generators, and the signature Dagster reads is the function's own."""
    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with permanent_failures():
                yield from compute(*args, **kwargs)

        return generator  # type: ignore[return-value]

    @functools.wraps(compute)
    def function(*args: Any, **kwargs: Any) -> Any:
        with permanent_failures():
            return compute(*args, **kwargs)

    return function  # type: ignore[return-value]
