-- Delete a schedule. ARGV: prefix, schedule id, owner. Returns 1, or 0 when there is
-- no such schedule of this owner. Jobs it submitted are not touched.
local sid, owner = ARGV[2], ARGV[3]
local ks = P .. ':schedule:' .. sid
if hget(ks, 'owner') ~= owner then return 0 end
redis.call('DEL', ks)
redis.call('ZREM', P .. ':schedules:due', sid)
redis.call('ZREM', P .. ':schedules:owner:' .. owner, sid)
return 1
