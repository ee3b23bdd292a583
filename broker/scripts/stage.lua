-- stage.lua: a synchronous round collects one delta per subset before it merges them.
-- KEYS[1] applied hash  KEYS[2] round deltas hash  KEYS[3] round meta hash
-- KEYS[4] wave done set KEYS[5] state hash         KEYS[6] staleness hash
-- ARGV[1] applied field ARGV[2] subset id ARGV[3] delta blob ARGV[4] meta (JSON: n, q)
-- ARGV[5] the job statuses that accept pushes, space separated (bpt/lifecycle.py)
-- Returns {status, done}: status is 'ok', 'dup' or 'closed' (the job is no longer running).
local status = redis.call('HGET', KEYS[5], 'status')
if status and not string.find(' ' .. ARGV[5] .. ' ', ' ' .. status .. ' ', 1, true) then
  return {'closed', 0}
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[5], 'duplicates', 1)
  return {'dup', redis.call('SCARD', KEYS[4])}
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], 'staged')
redis.call('HINCRBY', KEYS[5], 'accepted', 1)
redis.call('HINCRBY', KEYS[6], '0', 1)
redis.call('SADD', KEYS[4], ARGV[2])
return {'ok', redis.call('SCARD', KEYS[4])}
