-- transition.lua: move a job from one state to another, if the state machine allows it
-- from the state it is in now (compare-and-set on the status; bpt/lifecycle.py decides
-- which states a move may start from, and this script applies that, atomically).
-- KEYS[1] state hash (status, since, counters, results)
-- ARGV[1] the new status
-- ARGV[2] the states it may come from, space separated
-- ARGV[3] takeover: seconds after which a job already in the new status may be moved into
--         it again (a claim whose holder went silent); '' for none
-- ARGV[4] a field to set to the time of the move (e.g. started, finished); '' for none
-- ARGV[5..] field, value pairs to set with the move (results, the error)
-- The time is Redis's own (TIME), so no machine's clock decides anything.
-- Returns {outcome, previous status, since}: outcome is 'ok' or 'refused'.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'refused', 'unknown', '0'}
end
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0') or 0
local allowed = false
for state in string.gmatch(ARGV[2], '%S+') do
  if state == status then allowed = true end
end
if not allowed and status == ARGV[1] and ARGV[3] ~= '' and now - since > tonumber(ARGV[3]) then
  allowed = true
end
if not allowed then
  return {'refused', status, tostring(since)}
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'since', tostring(now))
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[4], tostring(now))
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return {'ok', status, tostring(since)}
