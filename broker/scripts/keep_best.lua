-- keep_best.lua: store the weights of the best-validation version, if it is still the best
-- (an evaluator of a better version may have come in between observe_val.lua and this).
-- KEYS[1] the job's state hash (best_version)  KEYS[2] the best version's weights blob
-- ARGV[1] the version these weights are  ARGV[2] the weights (safetensors)
-- Returns 1 if stored, 0 if another version is the best now.
if redis.call('HGET', KEYS[1], 'best_version') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
