-- Orders and their lines, priced by the catalog when the order was placed.
CREATE TABLE orders (
  id               uuid PRIMARY KEY,
  user_id          text NOT NULL,
  status           text NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
  total_minor      bigint NOT NULL,
  currency         char(3) NOT NULL,
  cancel_reason    text NOT NULL DEFAULT '',
  shipping         jsonb NOT NULL,
  idempotency_key  text,
  request_hash     text,
  stock_reserved   boolean NOT NULL DEFAULT false,
  payment_captured boolean NOT NULL DEFAULT false,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_by_user ON orders (user_id, id);

CREATE TABLE order_lines (
  order_id         uuid NOT NULL REFERENCES orders (id),
  line_no          integer NOT NULL,
  product_id       uuid NOT NULL,
  product_name     text NOT NULL,
  quantity         integer NOT NULL CHECK (quantity > 0),
  unit_price_minor bigint NOT NULL,
  PRIMARY KEY (order_id, line_no)
);
