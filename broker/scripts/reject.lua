-- reject.lua: record a push refused by the merge rule (too stale), once per subset and epoch.
-- KEYS[1] applied hash  KEYS[2] state hash  KEYS[3] wave done set
-- ARGV[1] applied field ARGV[2] subset id   ARGV[3] reason (e.g. stale:3, invalid)
-- ARGV[4] counter to raise: rejected (too stale) or invalid (NaN, wrong shapes)
-- ARGV[5] the job statuses that accept pushes, space separated (bpt/lifecycle.py)
-- Returns {status, done}: status is 'rejected', 'dup' or 'closed' (the job is no longer
-- running: nothing is recorded).
local status = redis.call('HGET', KEYS[2], 'status')
if status and not string.find(' ' .. ARGV[5] .. ' ', ' ' .. status .. ' ', 1, true) then
  return {'closed', 0}
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'duplicates', 1)
  return {'dup', redis.call('SCARD', KEYS[3])}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('SADD', KEYS[3], ARGV[2])
return {'rejected', redis.call('SCARD', KEYS[3])}
