-- keep_best.lua: store the weights of the best-validation version, if it is still the best
-- (an evaluator of a better version may have come in between observe_val.lua and this),
-- with that version and accuracy beside them: best.safetensors and metrics.json read these,
-- never best_version (which may already name a newer best whose weights are not stored yet).
-- KEYS[1] the job's state hash (best_version; best_blob_version, best_blob_val written)
-- KEYS[2] the best version's weights blob
-- ARGV[1] the version these weights are  ARGV[2] their validation accuracy  ARGV[3] the weights
-- Returns 1 if stored, 0 if another version is the best now.
if redis.call('HGET', KEYS[1], 'best_version') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'best_blob_version', ARGV[1], 'best_blob_val', ARGV[2])
return 1
