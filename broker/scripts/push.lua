-- push.lua: install merged weights if the global version is still the one they were
-- computed from (compare-and-set; the caller merges again on 'retry'). The caller normally
-- holds the job's merge lease, so the set rarely fails; it is what keeps the weights exact
-- when a lease expired under a slow pusher.
-- The pusher uploaded the blob with a plain SET to KEYS[1] just before (same round trip);
-- installing it is a RENAME, which moves the value without copying it (a blob passed as
-- ARGV is copied twice, and made a push of a 45 MB model twice as slow).
-- KEYS[1] uploaded blob     KEYS[2] weights blob (string)
-- KEYS[3] weights hash      (version, crc, rule: the merge rule's state)
-- KEYS[4] applied hash      ("<epoch>:<subset>" -> outcome): exactly once per subset and epoch
-- KEYS[5] state hash        (counters: accepted, duplicates)
-- KEYS[6] staleness hash    (staleness -> accepted pushes)
-- KEYS[7] recent accuracies (list, newest first)
-- KEYS[8] wave done set     (subset ids finished in this wave)
-- ARGV[1] checksum of the uploaded blob  ARGV[2] expected version
-- ARGV[3] applied field     ARGV[4] staleness ARGV[5] accuracy  ARGV[6] subset id
-- KEYS[9] merge lease      (string: the token of the pusher merging now)
-- KEYS[10] merge wake      (list of at most one token: wakes a pusher waiting for the lease)
-- ARGV[7] how many recent accuracies to keep  ARGV[8] this pusher's lease token
-- ARGV[9] the job statuses that accept pushes, space separated (bpt/lifecycle.py); a job
--         whose state hash has no status (a weight store used on its own) accepts them
-- ARGV[10] the merge rule's new state (JSON, bpt/train/rule_step.py), installed with the
--         weights as the weights hash's 'rule' field; '' when the step left it as it was
-- Returns {status, version, done}: status is 'ok', 'retry' (version moved on), 'dup' or
-- 'closed' (the job is no longer running: finishing, done, cancelled or failed).
-- On 'ok' and 'dup' the pusher's lease is given back and a waiting pusher woken; on
-- 'retry' the pusher keeps it for its next round.
local function release()
  if redis.call('GET', KEYS[9]) == ARGV[8] then
    redis.call('DEL', KEYS[9])
    redis.call('RPUSH', KEYS[10], '1')
    redis.call('LTRIM', KEYS[10], 0, 0)
  end
end
local function accepts(status)
  if not status then return true end
  for state in string.gmatch(ARGV[9], '%S+') do
    if state == status then return true end
  end
  return false
end
if not accepts(redis.call('HGET', KEYS[5], 'status')) then
  redis.call('DEL', KEYS[1])
  release()
  return {'closed', redis.call('HGET', KEYS[3], 'version') or '', 0}
end
if redis.call('HEXISTS', KEYS[4], ARGV[3]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[5], 'duplicates', 1)
  release()
  return {'dup', redis.call('HGET', KEYS[3], 'version'), redis.call('SCARD', KEYS[8])}
end
local current = redis.call('HGET', KEYS[3], 'version')
if current ~= ARGV[2] or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return {'retry', current or '', 0}
end
local version = tonumber(current) + 1
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], 'version', version, 'crc', ARGV[1])
if ARGV[10] and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[3], 'rule', ARGV[10])
end
redis.call('HSET', KEYS[4], ARGV[3], 'accepted:' .. version)
redis.call('HINCRBY', KEYS[5], 'accepted', 1)
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
redis.call('LPUSH', KEYS[7], ARGV[5])
redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[7]) - 1)
redis.call('SADD', KEYS[8], ARGV[6])
release()
return {'ok', tostring(version), redis.call('SCARD', KEYS[8])}
