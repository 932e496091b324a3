"""Run a function over a few chunks of work in forked children (Linux only).

Cheaper than a multiprocessing pool for one-shot work: the children inherit
the parent's imports and compiled schemas, so nothing is pickled but results.
The parent works on the first chunk itself. If forking is unsafe or a child
fails, the chunk is simply done in the parent, so callers always get results.
"""
from __future__ import annotations

import os
import pickle
import sys
import threading
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def can_fork() -> bool:
    """Forking is safe: Linux, and no other Python thread that might hold a lock."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


def map_forked(fn: Callable[[T], R], chunks: Sequence[T]) -> list[R]:
    """[fn(c) for c in chunks], chunks[1:] in forked children when safe."""
    if len(chunks) < 2 or not can_fork():
        return [fn(chunk) for chunk in chunks]
    children = [_spawn(fn, chunk) for chunk in chunks[1:]]
    results = [fn(chunks[0])]
    for chunk, child in zip(chunks[1:], children):
        results.append(_collect(child, fn, chunk))
    return results


def _spawn(fn: Callable[[T], R], chunk: T) -> tuple[int, int] | None:
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: compute, send, and leave without running the parent's cleanup
        os.close(read_fd)
        status = 0
        try:
            payload = pickle.dumps(fn(chunk), protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        except BaseException:  # noqa: BLE001 - the parent redoes the chunk
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    return pid, read_fd


def _collect(child: tuple[int, int] | None, fn: Callable[[T], R], chunk: T) -> R:
    if child is None:
        return fn(chunk)
    pid, read_fd = child
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not payload:
        return fn(chunk)
    return pickle.loads(payload)
