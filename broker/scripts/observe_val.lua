-- observe_val.lua: one validation accuracy of the global model, for early stopping and the
-- best model: atomically, so that two tasks evaluating versions at once cannot both claim
-- the best nor lose a count. An evaluation of a version older than the best, finishing
-- late, changes nothing (it would count a "no better" that the best already answered).
-- KEYS[1] the job's state hash (best_val, best_version, since_best)
-- ARGV[1] the validation accuracy  ARGV[2] the version it was measured on
-- Returns {1, 0} if it is the best so far (strictly better), else {0, evaluations since the best}.
local best = tonumber(redis.call('HGET', KEYS[1], 'best_val') or '')
local best_version = tonumber(redis.call('HGET', KEYS[1], 'best_version') or '')
local value, version = tonumber(ARGV[1]), tonumber(ARGV[2])
if best == nil or value > best then
  if best_version == nil or version > best_version then
    redis.call('HSET', KEYS[1], 'best_val', ARGV[1], 'best_version', ARGV[2], 'since_best', 0)
    return {1, 0}
  end
end
if best_version ~= nil and version < best_version then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'since_best') or '0')}
end
return {0, redis.call('HINCRBY', KEYS[1], 'since_best', 1)}
