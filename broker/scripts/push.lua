-- push.lua: apply one asynchronous push if the global version is still the one the
-- merged weights were computed from (compare-and-set; the caller retries on 'retry').
-- KEYS[1] weights hash      (version, blob, crc)
-- KEYS[2] applied hash      ("<epoch>:<subset>" -> outcome): exactly once per subset and epoch
-- KEYS[3] state hash        (counters: accepted, duplicates)
-- KEYS[4] staleness hash    (staleness -> accepted pushes)
-- KEYS[5] recent accuracies (list, newest first)
-- KEYS[6] wave done set     (subset ids finished in this wave)
-- ARGV[1] expected version  ARGV[2] new blob  ARGV[3] crc of the blob
-- ARGV[4] applied field     ARGV[5] staleness ARGV[6] accuracy  ARGV[7] subset id
-- ARGV[8] how many recent accuracies to keep
-- Returns {status, version, done}: status is 'ok', 'retry' (version moved on) or 'dup'.
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'duplicates', 1)
  return {'dup', redis.call('HGET', KEYS[1], 'version'), redis.call('SCARD', KEYS[6])}
end
local current = redis.call('HGET', KEYS[1], 'version')
if current ~= ARGV[1] then
  return {'retry', current or '', 0}
end
local version = tonumber(current) + 1
redis.call('HSET', KEYS[1], 'version', version, 'blob', ARGV[2], 'crc', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], 'accepted:' .. version)
redis.call('HINCRBY', KEYS[3], 'accepted', 1)
redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
redis.call('LPUSH', KEYS[5], ARGV[6])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[8]) - 1)
redis.call('SADD', KEYS[6], ARGV[7])
return {'ok', tostring(version), redis.call('SCARD', KEYS[6])}
