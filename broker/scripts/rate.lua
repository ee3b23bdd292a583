-- rate.lua: fold one task's throughput into a training process's rate, atomically.
-- Two processes of one worker finishing at once used to read the same old rate and
-- overwrite each other's update (a read-modify-write from Python).
-- KEYS[1] hash: "<worker>" -> samples/s of one of its training processes (EWMA), for one job
--         (or the worker registry's entry, field "rate")
-- ARGV[1] field
-- ARGV[2] observed samples/s of the task just finished
-- ARGV[3] weight of the newest observation (EWMA), in (0, 1]
-- Returns the new rate, as a string.
local observed = tonumber(ARGV[2])
local weight = tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
local new = observed
if old then
  new = weight * observed + (1 - weight) * old
end
redis.call('HSET', KEYS[1], ARGV[1], tostring(new))
return tostring(new)
