"""The job record and the Redis layout the proxy, the workers and the sink agree on.

One Redis holds everything, so that a job is queued and recorded in the same atomic step:

    <queue>            list   Celery task messages, LPUSHed by the proxy, BRPOPed by workers
    job:<id>           hash   status (pending | done | failed), request_id, attempts, timings,
                              predictions or error; expires after the job TTL
    results            list   finished jobs waiting for the sink (inference table)
    dead-letters       list   jobs that failed every attempt, newest last

Every state change is a Lua script: Redis runs it atomically, in one round trip. That is what
makes a job complete exactly once as far as the client can see, although the queue delivers at
least once (a job whose worker died is delivered again): the first worker to finish a job
records it, and a later finish of the same job changes nothing.
"""

import json
import uuid
from typing import Any

RESULTS = "results"
DEAD_LETTERS = "dead-letters"
TASK_NAME = "asynchronous.predict"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


# KEYS: queue, job. ARGV: max queue length, TTL, message, request id, submitted_at.
# Returns the queue length, or -1 when the queue is full (nothing written then). Idempotent: a
# job whose record exists was submitted already (the proxy retries a submit whose connection
# broke, perhaps after Redis ran it), so it is neither queued nor reset a second time.
SUBMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.call('LLEN', KEYS[1]) end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[2], 'status', 'pending', 'request_id', ARGV[4],
           'submitted_at', ARGV[5], 'attempts', 0)
redis.call('EXPIRE', KEYS[2], ARGV[2])
return redis.call('LPUSH', KEYS[1], ARGV[3])
"""

# KEYS: job. ARGV: worker name, started_at.
# Returns {attempt number, submitted_at}, or {-1} when there is nothing to do: the job is already
# finished (a second delivery) or its record expired.
START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return {-1} end
redis.call('HSET', KEYS[1], 'worker', ARGV[1], 'started_at', ARGV[2])
return {redis.call('HINCRBY', KEYS[1], 'attempts', 1), redis.call('HGET', KEYS[1], 'submitted_at')}
"""

# KEYS: job, and the list the outcome goes to (results or dead-letters), if any.
# ARGV: the outcome record for that list, how many entries the list keeps (0: all), then the
# job's new field-value pairs. Returns 1 when this call finished the job, 0 when it was
# finished already.
FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if KEYS[2] then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  if tonumber(ARGV[2]) > 0 then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1) end
end
return 1
"""


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def new_job_id() -> str:
    return uuid.uuid4().hex


def task_message(queue: str, job_id: str, rows: list[list[float]], request_id: str) -> str:
    """A Celery task message (protocol 2) in the Redis transport's envelope, ready to LPUSH.

    What `predict.apply_async(kwargs=...)` would send, built here so that the proxy can queue
    the job and write its record in one atomic Redis call (SUBMIT) without blocking its event
    loop on Celery's synchronous client. Protocol:
    https://docs.celeryq.dev/en/stable/internals/protocol.html (tests/test_units.py checks it
    against Celery's own builder; the end-to-end tests check a real worker runs it).
    """
    kwargs = {"job_id": job_id, "rows": rows, "request_id": request_id}
    headers: dict[str, Any] = {
        "lang": "py",
        "task": TASK_NAME,
        "id": job_id,
        "root_id": job_id,
        "parent_id": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "shadow": None,
        "argsrepr": "()",
        "kwargsrepr": repr({"job_id": job_id}),  # logs name the job, not the input rows
        "origin": "asynchronous-proxy",
        "ignore_result": True,
        "stamped_headers": None,
        "stamps": {},
        "replaced_task_nesting": 0,
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return dumps(
        {
            "body": dumps([[], kwargs, embed]),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": job_id,
                "reply_to": "",
                "delivery_mode": 2,
                # The anonymous exchange: the routing key is the queue, no binding lookup.
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "utf-8",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
