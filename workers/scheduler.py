"""The scheduler task: one round of IDPA (or the static baseline) for a job, re-armed
every TICK seconds on the control queue while the job runs.

Each round reads which ranges are done, the workers' heartbeats and measured throughputs,
gives back the ranges of a worker that is dead (no heartbeat for the timeout) or far behind
its predicted time, asks the policy for new assignments, and sends them to the workers' own
queues. Its state (epoch, cursor, ranges given back, ranges outstanding) lives in Redis and
is written with WATCH/MULTI: a round that raced another one writes nothing and sends nothing.
"""

from __future__ import annotations

import json
import uuid

import redis

from bpt.plan.idpa import IDPA, NodeView, Ranges, build_policy, overdue
from bpt.broker import clock, worker_registry
from bpt.broker.job_store import FINISHED, JobStore
from bpt.broker.weight_store import WeightStore

from . import flow, queues
from .app import CONTROL_QUEUE, RANGE_TASK, SCHEDULE_TASK, worker_queue

TICK = 0.5  # seconds between periodic rounds; every range task also runs one as it starts and ends


RACE_RETRIES = 3  # a round that lost the race to another plans again (the winner may not have seen our push)


def state_key(store: JobStore) -> str:
    return store.keys.schedule


def chain_key(store: JobStore) -> str:
    """The id of the live chain of rounds; rounds of an older chain do not re-arm."""
    return store.keys.schedule_chain


def initial_state(now: float) -> dict:
    return {"epoch": 0, "cursor": 0, "returned": [], "outstanding": {}, "probe_size": None, "rounds": 0,
            "at": now}


def start(app, store: JobStore) -> None:
    store.client.set(state_key(store), json.dumps(initial_state(clock.now(store.client))))
    new_chain(app, store)


def new_chain(app, store: JobStore) -> None:
    chain = uuid.uuid4().hex[:12]
    store.client.set(chain_key(store), chain)
    app.send_task(SCHEDULE_TASK, kwargs={"job_id": store.job_id, "chain": chain}, queue=CONTROL_QUEUE)


def is_live_chain(client, job_id: str, chain: str | None) -> bool:
    live = client.get(chain_key(JobStore(client, job_id)))
    return chain is not None and live is not None and live.decode() == chain


def schedule_round(app, client: redis.Redis, job_id: str, heartbeat_timeout: float, shards=None) -> bool:
    """One round; returns True if the job still needs rounds."""
    store = JobStore(client, job_id)
    status = store.status()
    if status in FINISHED or status == "unknown":
        return False
    if status == "paused":
        return True
    spec = store.spec()
    key = state_key(store)
    for _ in range(RACE_RETRIES):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                state = json.loads(pipe.get(key))
                sends, finished, gone = _plan(store, spec, state, heartbeat_timeout, clock.now(client))
                pipe.multi()
                pipe.set(key, json.dumps(state))
                pipe.execute()
                break
            except redis.WatchError:
                continue  # another round got there first and nothing was sent: plan again
    else:
        return True
    for name in gone:
        queues.purge(app, worker_queue(name))  # drop its stale messages: their ranges were given back
    if finished:
        # One round wins the job's claim and finishes it; the others keep the chain alive
        # until it has, so that one can take over if the finisher dies (lifecycle.TAKEOVER).
        flow.finish_job(store, WeightStore(client, job_id, script_table={}, shards=shards), spec)
        return store.status() not in FINISHED
    with app.producer_or_acquire() as producer:
        for worker, start_, end in sends:
            app.send_task(RANGE_TASK, kwargs={"job_id": job_id, "epoch": state["epoch"], "start": start_, "end": end},
                          queue=worker_queue(worker), producer=producer)
    return True


def _plan(store: JobStore, spec, state: dict, timeout: float, now: float):
    """Update state in place; return (assignments to send, is every range of the last epoch
    done?, workers gone whose queues to empty)."""
    client = store.client
    state["rounds"] += 1
    state["at"] = now
    done = {m.decode() for m in client.smembers(store.keys.wave_done(state["epoch"], 0))}
    outstanding = {k: v for k, v in state["outstanding"].items() if k not in done}
    if sum(_size(k) for k in done) >= spec.n_train:  # epoch complete: plan the next one now
        if state["epoch"] + 1 >= spec.epochs:
            return [], True, []  # the job's `claim` move lets one round finish it
        store.log("epoch-done", epoch=state["epoch"], rounds=state["rounds"])
        state.update(epoch=state["epoch"] + 1, cursor=0, returned=[], outstanding={})
        store.set_fields(epoch=state["epoch"])
        outstanding = {}

    workers = worker_registry.workers(client)
    alive = {n: w for n, w in workers.items() if worker_registry.is_alive(w, now, timeout)}
    # A worker's capacity in this job: one training process's rate measured in this job, or
    # until it has one the rate the worker's registry entry keeps from its earlier tasks (the
    # seed issue 16 allows; a worker with neither is probed), times its processes, all of
    # which its queue feeds. Without the seed, a new job sized its first tasks from probes of
    # 64 samples whose rate is mostly per-task overhead: at 16 workers IDPA then ran 295
    # small pushes instead of about 100 and ended at 88.9% test accuracy.
    job_rates = store.rates()
    capacity = {n: (job_rates.get(n) or w["rate"]) * w["processes"] if (job_rates.get(n) or w["rate"]) else None
                for n, w in alive.items()}
    returned = [tuple(r) for r in state["returned"]]
    slowest = min((job_rates[n] for n in alive if n in job_rates), default=None)
    late = set()  # live workers that just lost a range for holding it too long: not given it again now
    lacking = store.lacking()  # workers that declined: they cannot build the job's model
    for piece, held in list(outstanding.items()):
        worker = held["worker"]
        if worker in lacking:
            reason = f"{worker} cannot build the model ({lacking[worker]})"
        elif worker not in alive:
            reason = f"no heartbeat from {worker} for {now - workers.get(worker, {}).get('heartbeat', 0):.1f}s"
        else:
            why = overdue(now - held["at"], _size(piece), job_rates.get(worker), slowest)
            reason = f"{worker} {why}" if why else None
            if why:
                late.add(worker)
        if reason:
            del outstanding[piece]
            returned.append(_bounds(piece))
            store.log("reassigned", epoch=state["epoch"], piece=piece, worker=worker, reason=reason)

    ranges = Ranges(spec.n_train)
    ranges.cursor = state["cursor"]
    for start_, end in returned:
        ranges.give_back(start_, end)
    queued = {}
    for held in outstanding.values():
        queued[held["worker"]] = queued.get(held["worker"], 0) + held["end"] - held["start"]
    views = [NodeView(n, capacity[n], queued.get(n, 0)) for n in sorted(alive) if n not in late and n not in lacking]
    fastest = max((v.rate for v in views if v.rate), default=None)
    policy = build_policy(spec.partition, spec.subset_size, state["epoch"], state["probe_size"], state["cursor"], fastest)
    new = policy.assign(ranges, views) if views else []
    for a in new:
        outstanding[f"{a.start}:{a.end}"] = {"worker": a.node, "start": a.start, "end": a.end, "at": now}
    state.update(cursor=ranges.cursor, returned=list(ranges.returned), outstanding=outstanding)
    if isinstance(policy, IDPA):
        state["probe_size"] = policy.probe_size
    return [(a.node, a.start, a.end) for a in new], False, sorted(set(workers) - set(alive))


def _size(piece: str) -> int:
    start, end = _bounds(piece)
    return end - start


def _bounds(piece: str) -> tuple[int, int]:
    start, end = piece.split(":")
    return int(start), int(end)
