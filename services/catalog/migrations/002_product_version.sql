-- Bumped by every write, so cached copies can tell which is newer (see mesh/cache.ts).
ALTER TABLE products ADD COLUMN version bigint NOT NULL DEFAULT 1;
