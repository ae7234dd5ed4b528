-- get: read jobs with their place in line, atomically.
--   ARGV[1]  key prefix
--   ARGV[2…] job ids
-- Reply: per id, the job hash as a flat list (its attempts are its '@<n>:<name>'
-- fields) with 'id' (not a field of the hash: its key names it), '_position' and 'seq'
-- appended; {} for a job that does not exist.
-- @include line

local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local flat = redis.call('HGETALL', k_job(id))
  if #flat > 0 then
    local q = hget(k_job(id), 'queue')
    flat[#flat + 1] = 'id'
    flat[#flat + 1] = id
    flat[#flat + 1] = '_position'
    flat[#flat + 1] = tostring(position(id, q))
    flat[#flat + 1] = 'seq'  -- event <seq> is element seq - 1 of the job's log
    flat[#flat + 1] = tostring(redis.call('LLEN', k_job_events(id)))
    out[#out + 1] = flat
  else
    out[#out + 1] = {}
  end
end
return out
