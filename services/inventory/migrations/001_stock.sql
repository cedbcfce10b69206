-- Stock per product. The CHECKs are the guarantee that stock never goes below zero, whatever
-- runs concurrently: a reservation is a conditional UPDATE that the database refuses otherwise.
CREATE TABLE stock (
  product_id uuid PRIMARY KEY,
  available  integer NOT NULL DEFAULT 0 CHECK (available >= 0),
  reserved   integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- What each order holds. status: reserved → committed (order confirmed) or released.
CREATE TABLE reservations (
  order_id   uuid NOT NULL,
  product_id uuid NOT NULL,
  quantity   integer NOT NULL CHECK (quantity > 0),
  status     text NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (order_id, product_id)
);

-- Every manual adjustment, for the audit trail.
CREATE TABLE adjustments (
  id         bigserial PRIMARY KEY,
  product_id uuid NOT NULL,
  delta      integer NOT NULL,
  reason     text NOT NULL,
  actor      text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
