"""The official A2A Python SDK (a2a-sdk 1.3) against `loom serve`: fetch the card, send a
message (blocking), stream one, get a task, subscribe to one, cancel one, and see the errors the
SDK raises for another tenant's task. Prints one line per step; the Rust test checks them.

Usage: python3 sdk_client.py BASE_URL KEY OTHER_TENANT_KEY
"""

import asyncio
import sys

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.helpers import get_artifact_text, new_text_message
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError


def state(task):
    return TaskState.Name(task.status.state)


def message(text, context_id=None):
    return SendMessageRequest(message=new_text_message(text, context_id=context_id, role=Role.ROLE_USER))


def http(key):
    return httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def main(base, key, other_key):
    async with httpx.AsyncClient(timeout=30) as plain:
        card = await A2ACardResolver(plain, base).get_agent_card()
    iface = card.supported_interfaces[0]
    print(f"card: {card.name} {iface.protocol_binding} {iface.protocol_version} {iface.url} "
          f"streaming={card.capabilities.streaming} skills={[s.id for s in card.skills]}")

    blocking = ClientFactory(ClientConfig(streaming=False, httpx_client=http(key))).create(card)
    events = [e async for e in blocking.send_message(message("hello sdk"))]
    task = events[-1].task
    print(f"send: {state(task)} {get_artifact_text(task.artifacts[-1])}")
    context = task.context_id
    events = [e async for e in blocking.send_message(message("again", context_id=context))]
    print(f"follow-up: same-context={events[-1].task.context_id == context} {state(events[-1].task)}")

    streaming = ClientFactory(ClientConfig(streaming=True, httpx_client=http(key))).create(card)
    kinds, text, last = [], "", None
    async for e in streaming.send_message(message("stream this please")):
        kind = e.WhichOneof("payload")
        kinds.append(kind)
        if kind == "task":
            last = e.task
        elif kind == "artifact_update":
            chunk = get_artifact_text(e.artifact_update.artifact)
            text = text + chunk if e.artifact_update.append else chunk
        elif kind == "status_update":
            final = TaskState.Name(e.status_update.status.state)
    print(f"stream: first={kinds[0]} artifact_updates={kinds.count('artifact_update')} text={text!r} final={final}")

    got = await blocking.get_task(GetTaskRequest(id=last.id))
    print(f"get: {state(got)} {get_artifact_text(got.artifacts[-1])} history={len(got.history)}")

    pending = ClientFactory(ClientConfig(streaming=False, polling=True, httpx_client=http(key))).create(card)
    slow = [e async for e in pending.send_message(message("slow one"))][-1].task
    in_progress = state(slow) in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    print(f"non-blocking: in-progress={in_progress}")
    sub = [e.WhichOneof("payload") async for e in streaming.subscribe(SubscribeToTaskRequest(id=slow.id))]
    print(f"subscribe: first={sub[0]} last={sub[-1]}")

    slow2 = [e async for e in pending.send_message(message("slow two"))][-1].task
    canceled = await blocking.cancel_task(CancelTaskRequest(id=slow2.id))
    print(f"cancel: {state(canceled)}")
    try:
        await blocking.cancel_task(CancelTaskRequest(id=slow2.id))
        print("cancel again: accepted")
    except TaskNotCancelableError:
        print("cancel again: TaskNotCancelableError")

    other = ClientFactory(ClientConfig(streaming=False, httpx_client=http(other_key))).create(card)
    try:
        await other.get_task(GetTaskRequest(id=task.id))
        print("other tenant: saw the task")
    except TaskNotFoundError:
        print("other tenant: TaskNotFoundError")
    for c in (blocking, streaming, pending, other):
        await c.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
