-- The timeout sweeper looks for PENDING orders by age; terminal orders (nearly all) stay out of the index.
CREATE INDEX orders_pending_by_age ON orders (created_at) WHERE status = 'pending';
