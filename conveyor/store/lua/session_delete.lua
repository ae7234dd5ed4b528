-- session_delete: delete a tenant's named session.
--   ARGV[1]  key prefix
--   ARGV[2]  owner (tenant)
--   ARGV[3]  session name
-- Reply: 1 deleted; 0 the owner has no live session of that name.
-- @include base

local owner, name = ARGV[2], ARGV[3]
local key = k_session(owner, name)
local index = k_owner_sessions(owner)
local now = now_ms()
local expires = tonumber(redis.call('ZSCORE', index, name) or '0')
redis.call('ZREM', index, name)
local gone = redis.call('DEL', key)
if gone == 1 and expires > now then return 1 end
return 0
