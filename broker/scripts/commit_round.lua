-- commit_round.lua: install the merged weights of a synchronous round, once.
-- KEYS[1] weights hash  KEYS[2] round committed flag  KEYS[3] round deltas  KEYS[4] round meta
-- ARGV[1] expected version  ARGV[2] new blob  ARGV[3] crc of the blob
-- Returns {status, version}: status is 'ok', 'retry' (version moved on) or 'dup'.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'dup', redis.call('GET', KEYS[2])}
end
local current = redis.call('HGET', KEYS[1], 'version')
if current ~= ARGV[1] then
  return {'retry', current or ''}
end
local version = tonumber(current) + 1
redis.call('HSET', KEYS[1], 'version', version, 'blob', ARGV[2], 'crc', ARGV[3])
redis.call('SET', KEYS[2], version)
redis.call('DEL', KEYS[3], KEYS[4])
return {'ok', tostring(version)}
