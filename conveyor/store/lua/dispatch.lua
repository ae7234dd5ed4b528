-- Admission, run by the gateways (after submits, and on a tick): hand waiting jobs
-- to the executors as they have free slots (see admit() in _lib.lua).
-- ARGV: prefix, then the six transport arguments (see transport_args).
-- Returns a flat list {id1, attempt1, id2, attempt2, ...}.
return admit(transport_args(2), now_ms())
