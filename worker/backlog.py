"""The unfinished melody work, counted in work rather than jobs, in total and per client: what
the API's admission control reads (service/admission.py).

A job's work is its bars times its rows (melodies, or beams), so `{"bars": 256, "count": 16}`
weighs 512 times `{"bars": 8}`. One Redis hash, `<prefix>backlog`, holds `job:<id>` -> "<work>
<client>" for every unfinished job, the sum over them in `total`, and each client's sum in
`client:<client>`. Admitting a job adds its work only if both sums stay within their limits, in
one script, so two API processes can never both take the last place. Releasing is part of the
job record's own compare-and-set (worker/records.py runs `RELEASE` in the same script when the
state becomes succeeded, failed or cancelled): it happens exactly once, whichever process
finishes the job, and a job that never finishes (its record expired) cannot hold work forever,
because `sweep` drops entries whose record is gone.
"""
from model.generation.params import GenerationParams

# Lua, also run inside the job record's transition script: `backlog` is the hash's key, `job_id` the job.
RELEASE = """
local entry = redis.call('HGET', backlog, 'job:' .. job_id)
if entry then
  local work, client = string.match(entry, '^(%d+) (.*)$')
  redis.call('HDEL', backlog, 'job:' .. job_id)
  redis.call('HINCRBY', backlog, 'total', -tonumber(work))
  if redis.call('HINCRBY', backlog, 'client:' .. client, -tonumber(work)) <= 0 then
    redis.call('HDEL', backlog, 'client:' .. client)
  end
end
"""

# KEYS[1] the backlog hash; ARGV = job id, work, client, total limit, per-client limit.
# Returns 0 (admitted), 1 (the backlog is full) or 2 (this client's share is used up).
_ADMIT = """
local work = tonumber(ARGV[2])
if tonumber(redis.call('HGET', KEYS[1], 'total') or '0') + work > tonumber(ARGV[4]) then return 1 end
if tonumber(redis.call('HGET', KEYS[1], 'client:' .. ARGV[3]) or '0') + work > tonumber(ARGV[5]) then return 2 end
redis.call('HSET', KEYS[1], 'job:' .. ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
redis.call('HINCRBY', KEYS[1], 'total', work)
redis.call('HINCRBY', KEYS[1], 'client:' .. ARGV[3], work)
return 0
"""

_RELEASE_ONE = "local backlog, job_id = KEYS[1], ARGV[1]\n" + RELEASE


def job_work(params: dict) -> int:
    """A melody job's work: bars (the longest it may run) times rows (melodies or beams)."""
    defaults = GenerationParams()
    bars = params.get("max_bars") or params.get("bars") or defaults.bars
    rows = max(params.get("count") or defaults.count, params.get("beam_width") or 1)
    return int(bars) * int(rows)


def backlog_key(prefix: str) -> str:
    return f"{prefix}backlog"


class Backlog:
    """The unfinished work of one deployment (one key prefix)."""

    def __init__(self, redis, prefix: str):
        self.redis, self.key = redis, backlog_key(prefix)
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE_ONE)

    def admit(self, job_id: str, work: int, client: str, max_total: int, max_client: int) -> str | None:
        """Count the job's work in, or say why not: "backlog" (all clients' work would pass
        `max_total`) or "client" (this client's would pass `max_client`)."""
        refused = self._admit(keys=[self.key], args=[job_id, work, client, max_total, max_client])
        return {0: None, 1: "backlog", 2: "client"}[int(refused)]

    def release(self, job_id: str) -> None:
        """Take a job's work out (idempotent): a job that was admitted but never queued."""
        self._release(keys=[self.key], args=[job_id])

    def totals(self) -> dict:
        """{"work": unfinished work, "jobs": unfinished jobs, "clients": clients with some}."""
        fields = self.redis.hkeys(self.key)
        return {"work": int(self.redis.hget(self.key, "total") or 0),
                "jobs": sum(1 for f in fields if f.startswith(b"job:")),
                "clients": sum(1 for f in fields if f.startswith(b"client:"))}

    def sweep(self, job_exists) -> list[str]:
        """Release the jobs whose record is gone (expired, or deleted unqueued); returns their ids."""
        gone = [f.decode()[4:] for f in self.redis.hkeys(self.key)
                if f.startswith(b"job:") and not job_exists(f.decode()[4:])]
        for job_id in gone:
            self.release(job_id)
        return gone
