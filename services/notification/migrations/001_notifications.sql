-- Messages sent to users. source_event_id is unique: one notification per event, ever.
CREATE TABLE notifications (
  id                uuid PRIMARY KEY,
  user_id           text NOT NULL,
  channel           text NOT NULL DEFAULT 'email',
  recipient         text NOT NULL DEFAULT '',
  subject           text NOT NULL,
  body              text NOT NULL,
  source_event_id   text NOT NULL UNIQUE,
  source_event_type text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
