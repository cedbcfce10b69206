-- A charge needs two facts that arrive on different consumers: the order (amount, card) and its
-- stock being reserved. Whichever comes second triggers the charge; until the order is known the
-- row is a placeholder without an owner.
ALTER TABLE payments ADD COLUMN stock_reserved boolean NOT NULL DEFAULT false;
