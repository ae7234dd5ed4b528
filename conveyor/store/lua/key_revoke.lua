-- key_revoke: revoke an API key: its secret no longer finds it (the gateways' caches
-- forget it within seconds); its record stays, marked revoked.
--   ARGV[1]  key prefix
--   ARGV[2]  key id
--   ARGV[3]  the id of the key that revokes it
-- Reply: the key's hash (flat).
-- Refusals: KEY_NOT_FOUND <id>.
-- @include base

local id = ARGV[2]
local kk = k_api_key(id)
local hash = hget(kk, 'secret_hash')
if not hash then return refuse('KEY_NOT_FOUND', id) end
if not hget(kk, 'revoked') then
  redis.call('HSET', kk, 'revoked', int(now_ms()), 'revoked_by', ARGV[3])
end
redis.call('DEL', k_api_key_hash(hash))
return redis.call('HGETALL', kk)
