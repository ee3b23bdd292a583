-- renew_lease.lua: a pusher still merging or uploading keeps the job's merge lease (a large
-- model's upload outlasts LEASE_MS; the lease expired under every 180 MB push and the merge
-- was redone). Only the holder may renew it.
-- KEYS[1] the merge lease (string: holder's token)
-- ARGV[1] the pusher's token  ARGV[2] the new time to live in milliseconds
-- Returns 1 if renewed, 0 if the lease is not (or no longer) this pusher's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
