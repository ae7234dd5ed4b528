-- A queue's statistics kept as its jobs go (never by scanning jobs): totals since the
-- queue's first job, and histograms of its wait and run times. Each costs one or two
-- HINCRBYs of the caller's script, or nothing of its own in a script that caches the
-- counters (see cache_load in base.lua): totals are fields of the queue's hash (read
-- with it anyway), histograms one small hash per queue.
-- @include base

-- Upper bounds (ms) of the histogram buckets; a time above the last is in bucket
-- #HIST_BOUNDS_MS + 1 (+Inf). conveyor/queue_stats.py reads the same bounds
-- (HISTOGRAM_BOUNDS_MS): keep the two alike.
local HIST_BOUNDS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000,
                        3600000}

-- Count a job that reached `state` for good in its queue's total of that state:
-- field 'ended:<STATE>' of the queue's hash (one HINCRBY, or cached).
local function count_total(q, state)
  incr(k_queue(q), 'ended:' .. state, 1)
end

-- One time (ms) in a queue's histogram `name` ('wait' or 'run'): fields
-- '<n>:<bucket>' (not cumulative) and '<n>:sum' of hash <queue>:hist, where <n> is
-- the name's first letter (two HINCRBYs; in a script that caches counters, one HMGET
-- of the two the first time, and one HSET of the hash for the whole script).
local function hist_bucket(ms)
  for i, bound in ipairs(HIST_BOUNDS_MS) do
    if ms <= bound then return i end
  end
  return #HIST_BOUNDS_MS + 1
end
local function observe(q, name, ms)
  local key = k_index(q, 'hist')
  local n = string.sub(name, 1, 1)
  local bucket = n .. ':' .. dec(hist_bucket(ms))
  cache_load(key, {bucket, n .. ':sum'})
  incr(key, bucket, 1)
  incr(key, n .. ':sum', math.floor(ms))
end
