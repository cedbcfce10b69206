-- The outbox: events written in the same transaction as the state change that caused them,
-- published to JetStream by the relay (mesh/outbox.ts) and then marked.
CREATE TABLE outbox (
  id           text PRIMARY KEY,             -- the event id: ce-id and Nats-Msg-Id
  seq          bigserial NOT NULL UNIQUE,    -- publish order
  subject      text NOT NULL,
  payload      bytea NOT NULL,
  headers      jsonb NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- The inbox: event ids each consumer has handled, written in the same transaction as the effect,
-- so a redelivered event changes nothing.
CREATE TABLE inbox (
  consumer   text NOT NULL,
  event_id   text NOT NULL,
  handled_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);
