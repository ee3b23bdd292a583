-- release_lease.lua: give the job's merge lease back if this pusher still holds it, and wake
-- one pusher waiting for it (a push that was refused, or failed, never reaches push.lua's
-- release).
-- KEYS[1] merge lease (string: holder's token)  KEYS[2] merge wake (list, at most one token)
-- ARGV[1] this pusher's token
-- Returns 1 if released, 0 if the lease was not (or no longer) ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('RPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, 0)
  return 1
end
return 0
