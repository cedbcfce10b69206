-- One payment per order. The card number is kept only while the charge is pending and erased
-- once it is decided; afterwards only its last four digits remain.
CREATE TABLE payments (
  id             uuid PRIMARY KEY,
  order_id       uuid NOT NULL UNIQUE,
  user_id        text NOT NULL,
  amount_minor   bigint NOT NULL,
  currency       char(3) NOT NULL,
  card_number    text,
  card_last4     text NOT NULL,
  status         text NOT NULL CHECK (status IN ('pending', 'captured', 'failed', 'refunded', 'voided')),
  attempts       integer NOT NULL DEFAULT 0,
  failure_reason text NOT NULL DEFAULT '',
  decline_code   text NOT NULL DEFAULT '',
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now()
);
