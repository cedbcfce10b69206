-- Orders cancelled as inventory saw them. Events of one order travel on different consumers, so
-- order.cancelled can be handled before order.created; a reservation is never made for an order
-- listed here.
CREATE TABLE closed_orders (
  order_id  uuid PRIMARY KEY,
  closed_at timestamptz NOT NULL DEFAULT now()
);
