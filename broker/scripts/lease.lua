-- lease.lua: take or keep the cluster's reconciler lease, with a fencing token.
-- One loop per cluster reconciles open jobs: the worker holding this lease. Each time the
-- lease changes hands the fence grows by one, and every action the holder applies is
-- conditioned on the lease still holding its value (fenced.lua), so a holder that stalled
-- past its lease (a GC pause, SIGSTOP, a partition) cannot act once another has taken over.
-- KEYS[1] the lease (string: "<fence>:<holder>", expires)
-- KEYS[2] the fence counter (integer, never expires)
-- ARGV[1] the holder's name (unique per process)
-- ARGV[2] the lease's time to live, in milliseconds
-- Returns the lease's value if this holder has it now (taken or renewed), else false.
local value = redis.call('GET', KEYS[1])
if value then
  local holder = string.match(value, '^%d+:(.*)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return value
  end
  return false
end
local fence = redis.call('INCR', KEYS[2])
value = tostring(fence) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
