-- take: an executor worker takes up to `count` handed-over messages off the Dramatiq
-- queue and claims their jobs, in one step: Dramatiq's fetch (its heartbeat, pop, ack
-- set, message hash; see dispatch.lua in Dramatiq) followed by claim_job for each.
-- A message whose claim is refused (a duplicate or stale delivery) is acknowledged
-- here and not returned, so a stale delivery costs the executor nothing. A message
-- whose id does not name a job goes to its actor as it is.
--   ARGV[1]  key prefix
--   ARGV[2]  most messages to take
--   ARGV[3]  worker id (the executor worker: Dramatiq's worker id for the ack set and
--            heartbeat, and the claimant of the jobs)
--   ARGV[4]  stall timeout ms
--   ARGV[5…14] the policy arguments (transport_args)
--   ARGV[15…] the Dramatiq queues to take from, in order (the transport queue and
--            the queues of the kinds the worker serves)
-- Reply: the number of messages popped, then 11 entries per message returned: data,
-- message id, the Dramatiq queue it came from, then 1, spec, timeout_ms, limit, kind,
-- queue, trace, waited_from for a claimed job (claim_job's reply), or 0 and seven
-- empty strings for a message that is not a hand-over (its actor then claims the job
-- itself).
-- @include admission
-- @include executor

local count, worker, stall_ms = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = transport_args(5)
local now = now_ms()
redis.call('ZADD', t.ns .. ':__heartbeats__', int(now), worker)
local out = {0}
local function pass_on(data, mid, queue)
  for _, v in ipairs({data, mid, queue, 0, '', '', '', '', '', '', ''}) do out[#out + 1] = v end
end
for q = 5 + TRANSPORT_ARGC, #ARGV do
  if count <= 0 then break end
  local queue = ARGV[q]
  local qkey = t.ns .. ':' .. queue
  local mids = redis.call('LPOP', qkey, count)
  if mids then
    count = count - #mids
    out[1] = out[1] + #mids
    local acks = dramatiq_acks(t, worker, queue)
    redis.call('SADD', acks, unpack(mids))
    local datas = redis.call('HMGET', qkey .. '.msgs', unpack(mids))
    for i, mid in ipairs(mids) do
      local data = datas[i]
      if data then
        local id, attempt = string.match(mid, '^(.+)-(%d+)-%d+$')
        if not id then
          pass_on(data, mid, queue)
        else
          local claim = claim_job(id, tonumber(attempt), worker, stall_ms, now)
          if claim[1] == 1 then
            out[#out + 1] = data
            out[#out + 1] = mid
            out[#out + 1] = queue
            for _, v in ipairs(claim) do out[#out + 1] = v end
          elseif claim[2] == 'gone' then
            -- No such job: an id shaped like a hand-over's that is not one (a message
            -- sent with Dramatiq's own API), or one whose job was deleted. Its actor decides.
            pass_on(data, mid, queue)
          else
            ack_delivery(t, worker, mid, queue)
          end
        end
      else
        redis.call('SREM', acks, mid)  -- acknowledged already (a duplicate id in the list)
      end
    end
  end
end
return out
