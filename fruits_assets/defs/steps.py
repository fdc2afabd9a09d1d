"""A progress line for each stage: when an asset's computation starts, and when it ends with its time."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _log(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[str], None]:
    context = args[0] if args else kwargs.get("context")
    return context.log.info


def logged_stage(compute: F) -> F:
    """An asset function that logs `<asset>: started` and `<asset>: computed in N s` (its outputs' writes follow,
    logged by the IO managers); generator functions stay generators, and Dagster reads the function's own signature.
    Long stages add their own progress lines (the embeddings: photos done of total, rate, time left)."""
    name = compute.__name__

    if inspect.isgeneratorfunction(compute):

        @functools.wraps(compute)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            log, started = _log(args, kwargs), time.perf_counter()
            log(f"{name}: started")
            yield from compute(*args, **kwargs)
            log(f"{name}: computed in {time.perf_counter() - started:.1f} s")

        return generator  # type: ignore[return-value]

    @functools.wraps(compute)
    def function(*args: Any, **kwargs: Any) -> Any:
        log, started = _log(args, kwargs), time.perf_counter()
        log(f"{name}: started")
        result = compute(*args, **kwargs)
        log(f"{name}: computed in {time.perf_counter() - started:.1f} s")
        return result

    return function  # type: ignore[return-value]
