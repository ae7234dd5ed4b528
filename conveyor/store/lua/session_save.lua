-- session_save: save (or replace) a tenant's named session: a browser context's
-- storage state, kept until it expires. Expired sessions leave the owner's index here.
--   ARGV[1]  key prefix
--   ARGV[2]  owner (tenant)
--   ARGV[3]  session name
--   ARGV[4]  the storage state (JSON)
--   ARGV[5]  time to live (ms)
--   ARGV[6]  the job that saved it
--   ARGV[7]  the most live sessions an owner may have
--   ARGV[8]  cookies in the state
--   ARGV[9]  origins with local storage in it (JSON list)
-- Reply: {1, expire_ms, create_ms} saved; {0, live_count} the owner has the most
-- sessions already (and this name is not one of them).
-- @include base

local owner, name, state, ttl, job_id = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local limit = tonumber(ARGV[7])
local key = k_session(owner, name)
local index = k_owner_sessions(owner)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
if not redis.call('ZSCORE', index, name) then
  local live = redis.call('ZCARD', index)
  if live >= limit then return {0, live} end
end
local expires = now + ttl
redis.call('DEL', key)
redis.call('HSET', key, 'state', state, 'created', int(now), 'expires', int(expires), 'size', #state,
           'job', job_id, 'cookies', ARGV[8], 'origins', ARGV[9])
redis.call('PEXPIREAT', key, expires)
redis.call('ZADD', index, expires, name)
local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', index, last[2])
return {1, int(expires), int(now)}
