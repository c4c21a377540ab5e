"""A task's message written straight into the Redis broker's queue list.

Why: ``Task.delay`` costs about 0.8 ms of CPU by itself and 1.5-2 ms of a
run create's latency (kombu's producer pool, a channel and a Redis client
built per publish, and a round trip of its own). A run create writes the
run's first events to Redis anyway; its wake-up rides in the same pipeline,
so the whole after-commit work is one round trip.

The message is Celery's own: headers and body from ``app.amqp.as_task_v2``
(task protocol 2, with the task's time limits and ``ignore_result``), the
``before_task_publish`` signal sent as Celery sends it (the request id
travels that way; ``after_task_publish`` is not sent), in the envelope kombu's Redis
transport writes (``Channel._put``: an LPUSH of JSON with a base64 body onto
the queue's list). ``tests/test_taskqueue.py`` checks that envelope against
one kombu itself published, and that a worker runs the task.

Only for a ``redis://`` broker on the same server and database as
REDIS_URL (the default); otherwise ``apply_async`` sends it. The queue is
the one Celery's router picks (``CELERY_TASK_ROUTES``).
"""

from __future__ import annotations

import base64
import uuid
from functools import cache
from typing import Any

import orjson
import redis
from celery import current_app
from celery.app.task import Task
from celery.signals import before_task_publish
from celery.utils.nodenames import anon_nodename
from django.conf import settings


@cache
def _direct_possible(broker_url: str, redis_url: str) -> bool:
    app = current_app
    return (
        broker_url == redis_url
        and broker_url.split("://", 1)[0] in ("redis", "rediss")
        and not (app.conf.broker_transport_options or {}).get("global_keyprefix")
    )


@cache
def _queue_of(name: str) -> str:
    """The queue Celery's router sends task ``name`` to (task_routes)."""
    routed = current_app.amqp.router.route({}, name, (), {})
    queue = routed.get("queue")
    return str(getattr(queue, "name", queue) or current_app.conf.task_default_queue)


def direct_possible() -> bool:
    """Whether messages can go straight into the broker's lists from a
    pipeline on ``settings.REDIS_URL``."""
    return _direct_possible(str(current_app.conf.broker_url), settings.REDIS_URL)


def message(
    task: Task, args: tuple[Any, ...], *, queue: str | None = None
) -> tuple[str, bytes]:
    """The Redis list and the JSON envelope of ``task(*args)``, as kombu's
    Redis transport would LPUSH them (to ``queue``, else the routed one)."""
    app = current_app
    queue = queue or _queue_of(task.name)
    task_id = str(uuid.uuid4())
    made = app.amqp.as_task_v2(
        task_id,
        task.name,
        args=args,
        kwargs={},
        reply_to=app.thread_oid,
        time_limit=task.time_limit,
        soft_time_limit=task.soft_time_limit,
        origin=_origin(),
        ignore_result=bool(task.ignore_result),
    )
    headers, properties, body = dict(made.headers), dict(made.properties), made.body
    before_task_publish.send(
        sender=task.name,
        body=body,
        exchange="",
        routing_key=queue,
        headers=headers,
        properties=properties,
        declare=[],
        retry_policy=None,
    )
    envelope = {
        "body": base64.b64encode(orjson.dumps(body)).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return queue, orjson.dumps(envelope)


def push(
    pipe: redis.client.Pipeline,
    task: Task,
    args: tuple[Any, ...],
    *,
    queue: str | None = None,
) -> None:
    """Add ``task(*args)``'s message to ``pipe`` (on REDIS_URL's server;
    check ``direct_possible`` first). Sent when the pipeline executes."""
    queue, body = message(task, args, queue=queue)
    pipe.lpush(queue, body)


@cache
def _origin() -> str:
    return anon_nodename()
