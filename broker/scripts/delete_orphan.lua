-- delete_orphan.lua: delete a job key only if its job is not in the job index now. gc read
-- the index once and then deleted every job key whose id was not in that copy, so a job
-- submitted meanwhile (its spec, state and index entry are written in one MULTI) lost its
-- keys while still indexed (issue 26, finding 1). Checked and deleted in one script.
-- KEYS[1] the job index (sorted set of job ids)  KEYS[2] the job key
-- ARGV[1] the key's job id
-- Returns 1 if deleted, 0 if the job is indexed (or the key is gone).
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
return redis.call('DEL', KEYS[2])
