-- stage.lua: a synchronous round collects one delta per subset before it merges them.
-- KEYS[1] applied hash  KEYS[2] round deltas hash  KEYS[3] round meta hash
-- KEYS[4] wave done set KEYS[5] state hash         KEYS[6] staleness hash
-- ARGV[1] applied field ARGV[2] subset id ARGV[3] delta blob ARGV[4] meta (JSON: n, q)
-- Returns {status, done}: status is 'ok' or 'dup'.
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
