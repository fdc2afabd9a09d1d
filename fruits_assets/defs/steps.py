"""What wraps each asset's step: a progress line when its computation starts and when it ends with its time, and
which of its failures Dagster retries (a step whose error cannot clear by running again fails at once)."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dagster import Failure

from spark_code.errors import PermanentError

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def permanent_failures() -> Iterator[None]:
    """Turn a PermanentError (bad data or settings, a missing upstream output) into Failure(allow_retries=False), so
    the retry policy spends its retries only on what may clear (storage, lost executors). The IO managers use it
    too, for what they read and write."""
    try:
        yield
    except PermanentError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


@contextmanager
def _step(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[None]:
    context = args[0] if args else kwargs.get("context")
    log, started = context.log.info, time.perf_counter()
    log(f"{name}: started")
    with permanent_failures():
        yield
    log(f"{name}: computed in {time.perf_counter() - started:.1f} s")


def asset_step(compute: F) -> F:
    """An asset function that logs `<asset>: started` and `<asset>: computed in N s` (its outputs' writes follow,
    logged by the IO managers) and whose PermanentErrors fail the step at once (see permanent_failures); generator
    functions stay generators, and Dagster reads the function's own signature. Long stages add their own progress
    lines (the embeddings: photos done of total, rate, time left)."""
    name = compute.__name__

    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with _step(name, args, kwargs):
                yield from compute(*args, **kwargs)

        return generator  # type: ignore[return-value]

    @functools.wraps(compute)
    def function(*args: Any, **kwargs: Any) -> Any:
        with _step(name, args, kwargs):
            return compute(*args, **kwargs)

    return function  # type: ignore[return-value]
