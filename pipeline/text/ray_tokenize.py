"""``tokenize.engine = "ray"``: the tokenize workers as Ray tasks (``pip install jpipe[ray]``).

Each chunk becomes one Ray task that runs the same :func:`pipeline.text.sharded.tokenize_chunk`
as the local workers, so it writes the same work shard, and the merged token store is the same
byte for byte. The driver (the ``jpipe run`` process) reads the corpus and keeps at most two
chunks per CPU in flight, so memory stays flat; resuming works as with local workers.

Where Ray runs: ``RAY_ADDRESS`` (Ray's own variable, e.g. ``auto`` or ``ray://head:10001``) names
a running cluster; without it, a local Ray instance is started with ``tokenize.workers`` CPUs and
shut down at the end. On a cluster, the project directory (where the work shards are written)
must be on storage that every node mounts at the same path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "E110", "tokenize.engine = 'ray' needs Ray, which is not installed.", hint="Install it: pip install 'jpipe[ray]'"
        ) from None
    return ray


def run_ray(jobs: Iterator[dict[str, Any]], *, workers: int) -> Iterator[dict[str, Any]]:
    """``tokenize_chunk`` of every job as a Ray task; yields each task's summary as it finishes."""
    ray = _import_ray()
    from pipeline.text.sharded import tokenize_chunk

    started_here = not ray.is_initialized()
    if started_here:
        address = os.environ.get("RAY_ADDRESS")
        # A local instance gets the worker count as its CPUs; a cluster brings its own.
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=3)(tokenize_chunk)
        capacity = 2 * max(1, int(ray.cluster_resources().get("CPU", workers)))
        logger.info("tokenize: Ray engine, %d CPU(s)", capacity // 2)
        pending: list = []
        for job in jobs:
            pending.append(task.remote(job))
            if len(pending) >= capacity:
                done, pending = ray.wait(pending, num_returns=1)
                yield from ray.get(done)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done)
    finally:
        if started_here:
            ray.shutdown()
