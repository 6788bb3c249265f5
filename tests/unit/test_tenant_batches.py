"""Many tenants in few load task instances: how the tenants are batched."""

from __future__ import annotations

import pytest

from chat_ingest.dag_factory import tenant_batches


@pytest.mark.parametrize("count, max_tasks, sizes", [
    (0, 16, []), (2, 16, [1, 1]), (16, 16, [1] * 16), (17, 16, [2] * 8 + [1]), (20, 16, [2] * 10),
    (200, 16, [13] * 15 + [5]), (5, 0, [5])])
def test_batches_keep_every_tenant_once_in_order_within_the_task_limit(count, max_tasks, sizes):
    tenants = [f"t{i:03d}" for i in range(count)]
    batches = tenant_batches(tenants, max_tasks)
    assert [len(b) for b in batches] == sizes
    assert [t for b in batches for t in b] == tenants
    assert len(batches) <= max(max_tasks, 1)
