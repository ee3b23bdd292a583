-- renew_claim.lua: a finisher still evaluating says so, so that nobody takes its job over.
-- The `claim` move lets another finisher in once the claim is FINISH_PATIENCE old (by the
-- state's `since`); a final evaluation longer than that ran twice (issue 26, finding 12).
-- KEYS[1] the job's state hash (status, since, finisher)
-- ARGV[1] the finisher's token (set with its claim)
-- Returns 1 if renewed, 0 if the job is no longer finishing or another finisher holds it.
if redis.call('HGET', KEYS[1], 'status') ~= 'finishing' then
  return 0
end
if redis.call('HGET', KEYS[1], 'finisher') ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'since', tostring(tonumber(t[1]) + tonumber(t[2]) / 1e6))
return 1
