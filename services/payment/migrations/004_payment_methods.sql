-- Card numbers live only here, nowhere else in the mesh: CreatePaymentMethod stores one under a
-- random single-use token bound to the customer; orders and their events carry only the token.
-- order_id is the one order that used it; card_number is erased once that order's charge is
-- decided (or voided), and rows past expires_at are purged once unused or erased.
CREATE TABLE payment_methods (
  token       text PRIMARY KEY,
  user_id     text NOT NULL,
  card_number text,
  card_last4  text NOT NULL,
  expires_at  timestamptz NOT NULL,
  order_id    uuid UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_methods_expiry ON payment_methods (expires_at);
-- Payments still pending from before tokens keep their card here, under a token nobody knows.
INSERT INTO payment_methods (token, user_id, card_number, card_last4, expires_at, order_id)
  SELECT 'pm_legacy_' || id, user_id, card_number, card_last4, now(), order_id FROM payments WHERE card_number IS NOT NULL;
ALTER TABLE payments DROP COLUMN card_number;
