-- commit_round.lua: install the merged weights of a synchronous round, once.
-- The committer uploaded the blob to KEYS[1] just before; installing it is a RENAME (no copy).
-- KEYS[1] uploaded blob  KEYS[2] weights blob  KEYS[3] weights hash  KEYS[4] round committed flag
-- KEYS[5] round deltas   KEYS[6] round meta
-- ARGV[1] checksum of the uploaded blob  ARGV[2] expected version
-- KEYS[7] state hash  ARGV[3] the job statuses that accept pushes, space separated
-- Returns {status, version}: status is 'ok', 'retry' (version moved on), 'dup' or 'closed'
-- (the job is no longer running: cancelled or failed while the round was being merged).
local status = redis.call('HGET', KEYS[7], 'status')
if status and not string.find(' ' .. ARGV[3] .. ' ', ' ' .. status .. ' ', 1, true) then
  redis.call('DEL', KEYS[1])
  return {'closed', redis.call('HGET', KEYS[3], 'version') or ''}
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('DEL', KEYS[1])
  return {'dup', redis.call('GET', KEYS[4])}
end
local current = redis.call('HGET', KEYS[3], 'version')
if current ~= ARGV[2] or redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return {'retry', current or ''}
end
local version = tonumber(current) + 1
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[3], 'version', version, 'crc', ARGV[1])
redis.call('SET', KEYS[4], version)
redis.call('DEL', KEYS[5], KEYS[6])
return {'ok', tostring(version)}
