-- fenced.lua: let the reconciler apply one action, once, if it still holds the lease and the
-- job is still as its snapshot saw it (level-triggered: a decision about a job that moved on
-- meanwhile is dropped, and the next pass decides again).
-- KEYS[1] the reconciler lease (lease.lua)
-- KEYS[2] the job's state hash (status)
-- KEYS[3] the job's weights hash (version)
-- KEYS[4] the action's marker (string, expires): an action already applied is not again
-- KEYS[5] the job's reconciler hash (watched version, when), written with the action
-- ARGV[1] the lease value the caller holds
-- ARGV[2] the status the snapshot saw
-- ARGV[3] the version the snapshot saw
-- ARGV[4] the marker's time to live in seconds ('' for no marker)
-- ARGV[5..] field, value pairs to set on KEYS[5]
-- Returns 1 if applied, 0 if refused (lease lost, job moved on, or done already).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('HGET', KEYS[2], 'status') ~= ARGV[2] then
  return 0
end
if (redis.call('HGET', KEYS[3], 'version') or '0') ~= ARGV[3] then
  return 0
end
if ARGV[4] ~= '' then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[4]) then
    return 0
  end
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1])
end
return 1
