-- Acknowledge a delivery that its job's finish did not (finish.lua acknowledges the
-- deliveries of the attempts it ends): one whose actor ran nothing (its claim was
-- refused, or its job was no longer the executor's), or a message that was not a
-- hand-over. As Dramatiq's own ack: out of the worker's ack set and the message hash.
-- ARGV: prefix, worker id, message id, then the policy arguments.
ack_delivery(transport_args(4), ARGV[2], ARGV[3])
return 1
