-- The token of the order's payment method, so that order.cancelled can name it: payment then
-- erases the card behind it even when the order never reached payment (cancelled or out of stock
-- before its stock was reserved). A token, never a card number.
ALTER TABLE orders ADD COLUMN payment_method_token text NOT NULL DEFAULT '';
