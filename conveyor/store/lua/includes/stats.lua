-- A queue's statistics kept as its jobs go (never by scanning jobs): totals since the
-- queue's first job, and histograms of its wait and run times. Each costs one or two
-- HINCRBYs of the caller's script: totals are fields of the queue's hash (read with
-- it anyway), histograms one small hash per queue.
-- @include base

-- Upper bounds (ms) of the histogram buckets; a time above the last is in bucket
-- #HIST_BOUNDS_MS + 1 (+Inf). conveyor/queue_stats.py reads the same bounds
-- (HISTOGRAM_BOUNDS_MS): keep the two alike.
local HIST_BOUNDS_MS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000,
                        3600000}

-- Count a job that reached `state` for good in its queue's total of that state:
-- field 'ended:<STATE>' of the queue's hash (one HINCRBY).
local function count_total(q, state)
  redis.call('HINCRBY', k_queue(q), 'ended:' .. state, 1)
end

-- One time (ms) in a queue's histogram `name` ('wait' or 'run'): fields
-- '<n>:<bucket>' (not cumulative) and '<n>:sum' of hash <queue>:hist, where <n> is
-- the name's first letter (two HINCRBYs).
local function observe(q, name, ms)
  local bucket = #HIST_BOUNDS_MS + 1
  for i, bound in ipairs(HIST_BOUNDS_MS) do
    if ms <= bound then bucket = i break end
  end
  local key = k_index(q, 'hist')
  local n = string.sub(name, 1, 1)
  redis.call('HINCRBY', key, n .. ':' .. bucket, 1)
  redis.call('HINCRBY', key, n .. ':sum', int(ms))
end
