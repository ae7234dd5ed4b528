-- Read jobs with their place in line, atomically. ARGV: prefix, id...
-- Returns, per id, the job hash as a flat list with '_position' appended ({} if missing).
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local flat = redis.call('HGETALL', k_job(id))
  if #flat > 0 then
    local q = hget(k_job(id), 'queue')
    flat[#flat + 1] = '_position'
    flat[#flat + 1] = position(id, q)
  end
  out[#out + 1] = flat
end
return out
