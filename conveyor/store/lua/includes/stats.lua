-- A queue's statistics kept as its jobs go (never by scanning jobs): totals since the
-- queue's first job, and histograms of its wait and run times. A total costs one
-- HINCRBY of the caller's script, or nothing of its own in a script that caches the
-- counters (see cache_load in base.lua): totals are fields of the queue's hash (read
-- with it anyway). A time in a histogram costs one BITFIELD.
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

-- One time (ms) in a queue's histogram `name` ('wait' or 'run'): a string of signed
-- 64-bit big-endian integers, key <queue>:<name>-hist, BITFIELD's i64 slots: #0 the sum
-- of the times (ms), #i the count of bucket i (not cumulative). One BITFIELD of two
-- INCRBYs, at a fixed place each: no field looked for in a hash (the histograms were a
-- hash of 36 fields, read and written back by name, ~6 % of the scripts' Redis time).
-- JobStore.queue_histograms reads them (conveyor/store/job_store.py).
local function hist_bucket(ms)
  for i = 1, #HIST_BOUNDS_MS do
    if ms <= HIST_BOUNDS_MS[i] then return i end
  end
  return #HIST_BOUNDS_MS + 1
end
local function observe(q, name, ms)
  redis.call('BITFIELD', k_index(q, name .. '-hist'), 'INCRBY', 'i64', '#0', num(math.floor(ms)),
    'INCRBY', 'i64', '#' .. dec(hist_bucket(ms)), '1')
end
