-- The processor is called only by whoever moves the payment to 'charging' (a guarded UPDATE), and
-- with the payment id as its idempotency key. lease_until bounds a claim: a process that died while
-- charging leaves a lease that expires, and the charge is asked again with the same key, which the
-- processor answers with the first result. cancel_reason is set when the order is cancelled while
-- the charge is in flight: whoever records the outcome refunds a capture at once.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN ('pending', 'charging', 'captured', 'failed', 'refunded', 'voided'));
ALTER TABLE payments ADD COLUMN lease_until timestamptz;
ALTER TABLE payments ADD COLUMN cancel_reason text;
CREATE INDEX payments_unsettled ON payments (updated_at) WHERE status IN ('pending', 'charging');
