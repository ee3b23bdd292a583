"""Every Redis key bpt uses, built in one place.

A job's keys share the hash tag {job_id}, so on Redis Cluster they live in one slot and
the Lua scripts may touch them together.
"""

from __future__ import annotations

PREFIX = "bpt"
JOBS_INDEX = f"{PREFIX}:jobs"  # sorted set: job id -> submit time
WORKERS_INDEX = f"{PREFIX}:workers"  # set: names of every worker that beat or trained
OPEN_JOBS = f"{PREFIX}:jobs-open"  # set: ids of the jobs not ended (what the reconciler walks)
OPEN_JOBS_BUILT = f"{PREFIX}:jobs-open-built"  # string flag: OPEN_JOBS was filled from JOBS_INDEX once
RECONCILER_LEASE = f"{PREFIX}:reconciler"  # string, expiring: "<fence>:<holder>" of the reconciling worker
RECONCILER_FENCE = f"{PREFIX}:reconciler-fence"  # integer: grows each time the lease changes hands
RECONCILER_SEEN = f"{PREFIX}:reconciler-alive"  # set: workers alive at the last pass (for worker-lost)


def worker(name: str) -> str:  # hash: heartbeat, host, processes, rate, tasks, samples, stopped
    return f"{PREFIX}:worker:{name}"


def worker_name_claim(name: str) -> str:  # string: the token of the worker holding a default name
    return f"{PREFIX}:worker-name:{name}"


def weight_shard(job_id: str, tag: str, token: str) -> str:
    """string: one shard of one version's weights, on the weights' Redis (Cluster). Its hash
    tag is {job_id/tag}, not the job's, so that a job's shards spread over the primaries;
    token (the upload's) makes every version's shard a new, never rewritten key."""
    return f"{PREFIX}:wshard:{{{job_id}/{tag}}}:{token}"


def weight_shard_pattern(job_id: str) -> str:  # every shard of a job (SCAN pattern; job id unescaped)
    return f"{PREFIX}:wshard:{{{job_id}/*"


class JobKeys:
    def __init__(self, job_id: str):
        self.job_id = job_id
        self.base = f"{PREFIX}:job:{{{job_id}}}"

    def _k(self, name: str) -> str:
        return f"{self.base}:{name}"

    @property
    def spec(self) -> str:  # string: the job spec as JSON
        return self._k("spec")

    @property
    def state(self) -> str:  # hash: status, epoch, counters, final metrics
        return self._k("state")

    @property
    def weights(self) -> str:  # hash: version, crc (of the blob), rule (the merge rule's state, rule_step)
        return self._k("weights")

    @property
    def weights_blob(self) -> str:  # string: the global weights (safetensors) of that version
        return self._k("weights-blob")

    def weights_next(self, token: str) -> str:  # string: a pusher's upload, renamed into place
        return self._k(f"weights-next:{token}")

    @property
    def shard_uploads(self) -> str:  # sorted set: sharded uploads not yet installed (keys JSON -> Redis time)
        return self._k("shard-uploads")

    @property
    def shard_retired(self) -> str:  # sorted set: shards of replaced versions (keys JSON -> Redis time)
        return self._k("shard-retired")

    @property
    def merge_lease(self) -> str:  # string: the token of the one pusher merging now (expires)
        return self._k("merge-lease")

    @property
    def merge_wake(self) -> str:  # list of at most one token: wakes a pusher waiting for the lease
        return self._k("merge-wake")

    @property
    def applied(self) -> str:  # hash: "<epoch>:<subset>" -> outcome; makes pushes idempotent
        return self._k("applied")

    @property
    def staleness(self) -> str:  # hash: staleness -> accepted pushes
        return self._k("staleness")

    @property
    def recent_accuracy(self) -> str:  # list: accuracies of the latest accepted pushes
        return self._k("recent-acc")

    @property
    def evals(self) -> str:  # list of JSON: test loss/accuracy per evaluated version
        return self._k("evals")

    @property
    def events(self) -> str:  # list of JSON: what happened, for `bpt logs`
        return self._k("events")

    @property
    def worker_stats(self) -> str:  # hash: "<worker>:samples|seconds|tasks" -> number
        return self._k("workers")

    @property
    def runners(self) -> str:  # set: the workers that took a task of this job (finished or not)
        return self._k("runners")

    @property
    def gradients(self) -> str:  # hash: summed gradient statistics of accepted pushes (bpt.train.noise_scale)
        return self._k("grads")

    def data(self, name: str) -> str:  # string: a staged array (.npy bytes)
        return self._k(f"data:{name}")

    @property
    def best_blob(self) -> str:  # string: the weights (safetensors) of the best-validation version so far
        return self._k("best-blob")

    @property
    def guard(self) -> str:  # hash: the accuracy guardrail's best, level, strikes, peak, recoveries
        return self._k("guard")

    @property
    def schedule(self) -> str:  # string (JSON): the scheduler's epoch, cursor, outstanding ranges
        return self._k("sched")

    @property
    def schedule_chain(self) -> str:  # string: the id of the live chain of scheduling rounds
        return self._k("sched-chain")

    @property
    def reconciler(self) -> str:  # hash: the reconciler's watched version and since when
        return self._k("reconciler")

    def acted(self, action: str) -> str:  # string, expiring: the reconciler applied this action
        return self._k(f"acted:{action}")

    @property
    def rates(self) -> str:  # hash: worker -> samples/s of one of its training processes in this job (EWMA)
        return self._k("rates")

    @property
    def lacking(self) -> str:  # hash: worker -> why it cannot build the job's model (it declines)
        return self._k("lacking")

    def deliveries(self, epoch: int, piece) -> str:  # set: one token per delivery of a task
        return self._k(f"deliveries:{epoch}:{piece}")

    def delivery_runners(self, epoch: int, piece) -> str:  # hash: delivery token -> JSON worker, pid, arrived
        return self._k(f"deliveries:{epoch}:{piece}:runners")

    def wave_done(self, epoch: int, wave: int) -> str:  # set of finished subset ids
        return self._k(f"done:{epoch}:{wave}")

    def wave_released(self, epoch: int, wave: int) -> str:  # string flag: next wave sent
        return self._k(f"released:{epoch}:{wave}")

    def round_deltas(self, epoch: int, wave: int) -> str:  # sync: hash subset -> delta blob
        return self._k(f"round:{epoch}:{wave}:deltas")

    def round_meta(self, epoch: int, wave: int) -> str:  # sync: hash subset -> JSON n, q
        return self._k(f"round:{epoch}:{wave}:meta")

    def round_committed(self, epoch: int, wave: int) -> str:  # sync: string flag
        return self._k(f"round:{epoch}:{wave}:committed")

    def pattern(self) -> str:
        return f"{self.base}:*"

    def released_pattern(self) -> str:  # SCAN pattern of every wave_released flag (job id glob-escaped)
        return f"{glob_escape(self.base)}:released:*"

    def committed_pattern(self) -> str:  # SCAN pattern of every sync round_committed flag
        return f"{glob_escape(self.base)}:round:*:committed"

    def bookkeeping_patterns(self) -> list[str]:
        """The per-wave and per-task keys a finished job no longer needs (done sets, release
        flags, sync rounds, delivery counts, the reconciler's notes); its results and counters stay."""
        return [f"{self.base}:{part}:*" for part in ("done", "released", "round", "deliveries", "acted")] + [
            f"{self.base}:reconciler*", f"{self.base}:runners"]


def glob_escape(text: str) -> str:
    """text with Redis's glob characters escaped (a job id could hold them), for SCAN MATCH."""
    for ch in "\\[]?*":
        text = text.replace(ch, "\\" + ch)
    return text


def applied_field(epoch: int, subset: int) -> str:
    return f"{epoch}:{subset}"
