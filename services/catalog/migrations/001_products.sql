-- Products and their prices (integer minor units + ISO 4217 code).
CREATE TABLE products (
  id           uuid PRIMARY KEY,
  sku          text NOT NULL UNIQUE,
  name         text NOT NULL,
  description  text NOT NULL DEFAULT '',
  category     text NOT NULL DEFAULT '',
  price_minor  bigint NOT NULL CHECK (price_minor > 0),
  currency     char(3) NOT NULL,
  image_url    text NOT NULL DEFAULT '',
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_category ON products (category, id);
