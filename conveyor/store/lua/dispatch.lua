-- dispatch: admission, run by the gateways (after submits, and on a tick): hand
-- waiting jobs to the executors as they have free slots (see admit()).
--   ARGV[1]  key prefix
--   ARGV[2…] the policy arguments (transport_args)
-- Reply: a flat list {id1, attempt1, id2, attempt2, ...} of the jobs handed over.
-- @include admission

return admit(transport_args(2), now_ms())
