-- ack: acknowledge a delivery that its job's finish did not (finish.lua acknowledges
-- the deliveries of the attempts it ends): one whose actor ran nothing (its claim was
-- refused, or its job was no longer the executor's), or a message that was not a
-- hand-over. As Dramatiq's own ack: out of the worker's ack set and the message hash.
--   ARGV[1]  key prefix
--   ARGV[2]  Dramatiq worker id
--   ARGV[3]  message id
--   ARGV[4]  the Dramatiq queue it was taken from
--   ARGV[5…] the policy arguments (transport_args)
-- Reply: 1.
-- @include transport

ack_delivery(transport_args(5), ARGV[2], ARGV[3], ARGV[4])
return 1
