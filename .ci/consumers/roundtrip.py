"""A round trip against the reference server with a Python client generated from the
example's OpenAPI document by openapi-python-client (see .ci/run).

Usage: python3 roundtrip.py <folder of the generated package> <base URL> <token>

It uses only the generated, typed client: a create read back as a typed `TaskRecord`, an
optimistic-concurrency conflict on a `manual` field, a mutation rejected in its own result
while the other mutations of the push apply, and a push the server refuses whole (422
problem+json). It exits non-zero on the first expectation that does not hold.
"""

import datetime
import os
import sys
import time
import uuid

sys.path.insert(0, sys.argv[1])

from tasks_client import AuthenticatedClient  # noqa: E402
from tasks_client.api.health import health  # noqa: E402
from tasks_client.api.sync import changes, push, snapshot  # noqa: E402
from tasks_client.models import (  # noqa: E402
    AppliedResult,
    ChangesResponse,
    ConflictResult,
    Problem,
    ProjectCreate,
    ProjectRecord,
    PushRequest,
    PushResponse,
    RejectedResult,
    SnapshotResponse,
    TaskCreate,
    TaskPatch,
    TaskPatchPriceCents,
    TaskPatchLikes,
    TaskRecord,
    TaskServerRecord,
    TaskUpdate,
)
from tasks_client.models.task_patch_title import TaskPatchTitle  # noqa: E402


def expect(cond, what):
    if not cond:
        sys.exit(f"round trip failed: {what}")
    print(f"ok: {what}")


def uuid7():
    # A UUID v7 from the clock, as the protocol prefers (ids are made offline).
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 66) & 0xFFF) << 64
    value |= (0b10 << 62) | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)


def key():
    return str(uuid.uuid4())


base_url, token = sys.argv[2], sys.argv[3]
client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True)

status = health.sync(client=client)
expect(status is not None and status.status == "ok", "health answers ok")
fingerprint = status.fingerprint

project_id, task_id = uuid7(), uuid7()
project = ProjectCreate(
    idempotency_key=key(),
    entity_type="project",
    entity_id=project_id,
    op="create",
    record=ProjectRecord(
        id=project_id,
        name="Groceries",
        created_at=datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc),
    ),
)
task = TaskCreate(
    idempotency_key=key(),
    entity_type="task",
    entity_id=task_id,
    op="create",
    record=TaskRecord(
        id=task_id,
        project_id=project_id,
        title="Buy milk",
        status="open",
        tags=["home"],
        likes=0,
        price_cents=199,
        due=None,
        meta={},
        type_=None,
    ),
)
answer = push.sync(client=client, body=PushRequest(mutations=[project, task]), sync_model_fingerprint=fingerprint)
expect(isinstance(answer, PushResponse), "the push answers a typed PushResponse")
expect(all(isinstance(r, AppliedResult) for r in answer.results), "both creates are applied")
applied = answer.results[1]
expect(isinstance(applied.server, TaskServerRecord), "the result carries a typed TaskServerRecord")
version = applied.server.version

# Pull it back, typed.
page = changes.sync(client=client, sync_model_fingerprint=fingerprint)
expect(isinstance(page, ChangesResponse), "changes answers a typed ChangesResponse")
mine = [c for c in page.changes if isinstance(c, TaskServerRecord) and c.entity_id == task_id]
expect(len(mine) == 1, "the task is in the change feed")
record = mine[0].record
expect(isinstance(record, TaskRecord), "its record is a TaskRecord")
expect(record.title == "Buy milk" and record.price_cents == 199 and record.tags == ["home"], "with the values pushed")
expect(mine[0].server_updated_at == applied.server.server_updated_at, "one timestamp spelling in push results and changes")

full = snapshot.sync(client=client, sync_model_fingerprint=fingerprint)
expect(isinstance(full, SnapshotResponse), "snapshot answers a typed SnapshotResponse")
expect(any(isinstance(r, TaskServerRecord) and r.entity_id == task_id for r in full.records), "the task is in the snapshot")

# Optimistic concurrency: two edits of the `manual` field price_cents made on version
# `version`; the second arrives after the first and conflicts.
def price_edit(new):
    return TaskUpdate(
        idempotency_key=key(),
        entity_type="task",
        entity_id=task_id,
        op="update",
        base_version=version,
        patch=TaskPatch(price_cents=TaskPatchPriceCents(base=199, set_=new)),
    )


first = push.sync(client=client, body=PushRequest(mutations=[price_edit(249)]), sync_model_fingerprint=fingerprint)
expect(isinstance(first.results[0], AppliedResult), "the first price edit applies")
second = push.sync(client=client, body=PushRequest(mutations=[price_edit(299)]), sync_model_fingerprint=fingerprint)
conflict = second.results[0]
expect(isinstance(conflict, ConflictResult), "the concurrent price edit is a conflict")
expect(conflict.fields == ["price_cents"], "on price_cents")
expect(isinstance(conflict.server, TaskServerRecord) and conflict.server.record.price_cents == 249, "carrying the server's newer record")

# A mutation the server refuses is rejected in its own result; the others apply.
missing = uuid7()
orphan = TaskUpdate(
    idempotency_key=key(),
    entity_type="task",
    entity_id=missing,
    op="update",
    base_version=1,
    patch=TaskPatch(likes=TaskPatchLikes(add=1)),
)
like = TaskUpdate(
    idempotency_key=key(),
    entity_type="task",
    entity_id=task_id,
    op="update",
    patch=TaskPatch(likes=TaskPatchLikes(add=2)),
)
mixed = push.sync(client=client, body=PushRequest(mutations=[orphan, like]), sync_model_fingerprint=fingerprint)
expect(isinstance(mixed.results[0], RejectedResult), "an update of a record that does not exist is rejected")
expect(isinstance(mixed.results[0].problem, Problem) and 400 <= mixed.results[0].problem.status < 500, "with a typed problem")
expect(isinstance(mixed.results[1], AppliedResult) and mixed.results[1].server.record.likes == 2, "the other mutation of the push applies")

# A body the document forbids is refused whole, as problem+json.
bad = PushRequest(mutations=[TaskUpdate(
    idempotency_key="",
    entity_type="task",
    entity_id=task_id,
    op="update",
    patch=TaskPatch(title=TaskPatchTitle(hlc="019a1b2c3d4e-00000000-7f3a9c1d2e4b5a60", set_="x")),
)])
refused = push.sync_detailed(client=client, body=bad, sync_model_fingerprint=fingerprint)
expect(refused.status_code == 422 and isinstance(refused.parsed, Problem), "an empty idempotency key is refused with 422 problem+json")
expect(refused.parsed.pointer == "/mutations/0/idempotency_key", "pointing at the key")
print("the generated Python client round-trips against the reference server")
