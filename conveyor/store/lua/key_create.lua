-- key_create: create an API key (its secret is never stored: only its hash).
--   ARGV[1]  key prefix
--   ARGV[2]  key id
--   ARGV[3]  the secret's hash (hex SHA-256)
--   ARGV[4]  tenant
--   ARGV[5]  role (1 viewer, 2 submitter, 3 operator, 4 admin)
--   ARGV[6]  name
--   ARGV[7]  the id of the key that creates it
-- Reply: the key's hash (flat).
-- @include base

local id, hash = ARGV[2], ARGV[3]
local kk = k_api_key(id)
redis.call('HSET', kk, 'id', id, 'tenant', ARGV[4], 'role', ARGV[5], 'name', ARGV[6], 'created_by', ARGV[7],
  'created', int(now_ms()), 'secret_hash', hash)
redis.call('SET', k_api_key_hash(hash), id)
redis.call('ZADD', K_API_KEYS, int(now_ms()), id)
return redis.call('HGETALL', kk)
