"""The job record and the Redis layout the proxy, the workers and the sink agree on.

One Redis holds everything, so that a job is queued and recorded in the same atomic step:

    <queue>            list   Celery task messages, LPUSHed by the proxy, BRPOPed by workers
    unacked            hash   kombu's: messages taken by a worker, not yet acknowledged
    job:<id>           hash   status (pending | done | failed), request_id, attempts, timings,
                              predictions or error; while pending, its task message; expires
                              after the job TTL
    pending            set    ids of the jobs not finished yet
    missing            hash   pending jobs whose message a sweep found nowhere: since when
    sweeping           string the lock of the worker sweeping now (expires)
    results            list   finished jobs waiting for the sink (inference table)
    dead-letters       list   jobs that failed every attempt, newest last

Every state change is a Lua script: Redis runs it atomically, in one round trip. That is what
makes a job complete exactly once as far as the client can see, although the queue delivers at
least once (a job whose worker died is delivered again): the first worker to finish a job
records it, and a later finish of the same job changes nothing.

One gap is kombu's, not ours: a worker takes a message (BRPOP) and records it as unacknowledged
in a second call, so a message taken in the instant Redis stops, or by a worker killed between
the two calls, is in neither place, and nothing would ever deliver it again. sweep() finds such a
job (pending, its message nowhere) and queues its message again.
"""

import json
import re
import uuid
from typing import Any

from redis import Redis

RESULTS = "results"
DEAD_LETTERS = "dead-letters"
PENDING = "pending"
MISSING = "missing"
SWEEPING = "sweeping"
UNACKED = "unacked"  # kombu's Redis transport's default unacked_key
TASK_NAME = "asynchronous.predict"


JOB_PREFIX = "job:"


def job_key(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}"


# KEYS: queue, job, pending. ARGV: max queue length, TTL, message, request id, submitted_at,
# job id. Returns the queue length, or -1 when the queue is full (nothing written then).
# Idempotent: a job whose record exists was submitted already (the proxy retries a submit whose
# connection broke, perhaps after Redis ran it), so it is neither queued nor reset a second time.
SUBMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.call('LLEN', KEYS[1]) end
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[2], 'status', 'pending', 'request_id', ARGV[4],
           'submitted_at', ARGV[5], 'attempts', 0, 'message', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[6])
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

# KEYS: job, pending, and the list the outcome goes to (results or dead-letters), if any.
# ARGV: the job id, the outcome record for that list, how many entries the list keeps (0: all),
# then the job's new field-value pairs. Returns 1 when this call finished the job, 0 when it was
# finished already.
FINISH = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HDEL', KEYS[1], 'message')
redis.call('SREM', KEYS[2], ARGV[1])
if KEYS[3] then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  if tonumber(ARGV[3]) > 0 then redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1) end
end
return 1
"""

# KEYS: pending, queue, missing. ARGV: the job key prefix, how long a job's message must have
# been missing before it is queued again (seconds), then the ids of the pending jobs whose
# message a sweep just found nowhere. Returns {jobs queued again, jobs missing not long enough}.
# A job missing once may be in the instant between kombu's two calls: only one still missing
# after the grace is queued again, with a delivery tag of its own (so that the ack of a copy
# that was not lost after all cannot remove it from the unacked hash). The job records are keys
# this script does not declare: one Redis holds everything here (not Redis Cluster).
REQUEUE_MISSING = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1e6
local missing = {}
for i = 3, #ARGV do missing[ARGV[i]] = true end
for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not missing[id] then redis.call('HDEL', KEYS[3], id) end  -- found again since
end
local queued, waiting = 0, 0
for i = 3, #ARGV do
  local id, job = ARGV[i], ARGV[1] .. ARGV[i]
  local message = redis.call('HGET', job, 'message')
  if redis.call('HGET', job, 'status') ~= 'pending' or not message then
    redis.call('SREM', KEYS[1], id)  -- finished since, or expired
    redis.call('HDEL', KEYS[3], id)
  else
    local since = tonumber(redis.call('HGET', KEYS[3], id))
    if not since then
      redis.call('HSET', KEYS[3], id, now)
      waiting = waiting + 1
    elseif now - since >= tonumber(ARGV[2]) then
      local n = redis.call('HINCRBY', job, 'requeued', 1)
      local tag = '"delivery_tag":"' .. id .. '-requeued-' .. n .. '"'
      redis.call('RPUSH', KEYS[2], (string.gsub(message, '"delivery_tag":"[^"]*"', tag, 1)))
      redis.call('HDEL', KEYS[3], id)
      queued = queued + 1
    else
      waiting = waiting + 1
    end
  end
end
return {queued, waiting}
"""

CORRELATION_ID = re.compile(r'"correlation_id":\s*"([^"]+)"')


def sweep(redis: Redis, queue: str, lost_after_seconds: float, chunk: int = 1000) -> list[int]:
    """Queue again the jobs whose message kombu lost: [jobs queued again, jobs missing].

    Cheap while nothing is lost: every pending job has a message queued or unacknowledged (a
    retry or a redelivery can make two), so only more pending jobs than messages means one went
    missing. Then the messages are read for their correlation id (the job id; kombu re-encodes
    a message it restores, so no exact match), a chunk per call so that Redis serves others in
    between: the queue from its head, where workers do not take, then the unacked hash, where a
    message taken meanwhile has gone. A job whose message was seen in neither place is missing.
    """
    # One statement per command: redis-py types a pipeline's commands as the client's, returning
    # the reply, so a chain (scard(...).llen(...)) does not type-check although it runs.
    pipe = redis.pipeline()
    pipe.scard(PENDING)
    pipe.llen(queue)
    pipe.hlen(UNACKED)
    pending, queued, unacked = pipe.execute()
    if pending <= queued + unacked:
        redis.delete(MISSING)
        return [0, 0]
    carried: set[str] = set()
    start = 0
    while messages := redis.lrange(queue, start, start + chunk - 1):
        carried.update(_correlation_ids(messages))
        start += chunk
    carried.update(_correlation_ids(redis.hvals(UNACKED)))
    missing = [job_id for job_id in map(_text, redis.smembers(PENDING)) if job_id not in carried]
    keys = [PENDING, queue, MISSING]
    return list(redis.eval(REQUEUE_MISSING, 3, *keys, JOB_PREFIX, lost_after_seconds, *missing))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _correlation_ids(messages: list[bytes | str]) -> set[str]:
    return {m.group(1) for m in map(CORRELATION_ID.search, map(_text, messages)) if m}


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
