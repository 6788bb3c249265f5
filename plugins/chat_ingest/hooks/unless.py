"""UnlessS3Hook: the Unless conversations bucket (seed 003), an S3Hook.

The connection (``unless_s3``, of this project's type ``unless_s3``: an aws connection whose
Test button lists the configured bucket instead of calling AWS STS, which MinIO and other
S3-compatible stores do not have) carries the access key, the secret, and an ``endpoint_url``
extra for MinIO or another S3-compatible store, so the same code runs against AWS, MinIO and the
sandbox's moto server.  The hook does I/O only: paginated listing, and bounded parallel
downloads over a client whose connection pool matches the number of download threads.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, TypeVar

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

T = TypeVar("T")


class ObjectGone(Exception):
    """The object was deleted between listing and download."""


class UnlessS3Hook(S3Hook):
    """List conversation objects page by page; download many in parallel, in listing order."""

    default_conn_name = "unless_s3"
    conn_type = "unless_s3"
    hook_name = "Unless conversations (S3)"

    def __init__(self, aws_conn_id: str = default_conn_name, *, max_workers: int = 16, **kwargs) -> None:
        # One connection per download thread, and one for the listing that feeds them (a pool one short
        # keeps discarding connections, "Connection pool is full" in the log, and opening new ones).
        config = {"max_pool_connections": max_workers + 1, "retries": {"mode": "standard", "max_attempts": 5},
                  "connect_timeout": 10, "read_timeout": 120}
        super().__init__(aws_conn_id=aws_conn_id, config=config, **kwargs)
        self.max_workers = max_workers

    @cached_property
    def conn_config(self):
        """The aws connection wrapper, without its warning that this type is not called ``aws``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*expected connection type 'aws'", category=UserWarning)
            return super().conn_config

    def test_connection(self) -> tuple[bool, str]:
        """List the configured bucket (``unless.bucket`` in sources.yaml) through the connection's endpoint."""
        from chat_ingest.config import source_config

        try:
            bucket = source_config("unless")["bucket"]
            self.get_conn().list_objects_v2(Bucket=bucket, MaxKeys=1)
        except Exception as exc:  # noqa: BLE001 -- the Test button shows why
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Listed bucket {bucket!r} at {self.conn_config.endpoint_url or 'AWS S3'}"

    def iter_pages(self, bucket: str, prefix: str, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``{Key, LastModified, ETag, Size}`` under ``prefix``, as S3 returns them."""
        paginator = self.get_conn().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            yield page.get("Contents", [])

    def download_many(self, bucket: str, items: Iterable[T], key_of) -> Iterator[tuple[T, bytes | ObjectGone]]:
        """``(item, body)`` for each item, in order, with at most ``2 × max_workers`` downloads in flight.

        Memory is bounded by the objects in flight, however many items there are.  An
        object deleted since it was listed comes back as :class:`ObjectGone`; any other
        error fails the iteration (the task retries).
        """
        client = self.get_conn()

        def fetch(item: T) -> bytes | ObjectGone:
            key = key_of(item)
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                return ObjectGone(key)

        with ThreadPoolExecutor(self.max_workers, thread_name_prefix="unless-get") as pool:
            in_flight: deque = deque()
            for item in items:
                in_flight.append((item, pool.submit(fetch, item)))
                if len(in_flight) >= 2 * self.max_workers:
                    done, future = in_flight.popleft()
                    yield done, future.result()
            while in_flight:
                done, future = in_flight.popleft()
                yield done, future.result()
