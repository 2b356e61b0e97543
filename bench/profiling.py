"""``--profile``: a pyinstrument profile of a measured phase, written to bench/results (the `bench` extra)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bench.common import RESULTS


@contextmanager
def profiled(name: str, *, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"profile-{name}.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        (RESULTS / f"profile-{name}.html").write_text(profiler.output_html())
        print(f"profile: {RESULTS / f'profile-{name}.txt'}")
