-- A join of two streams bounded by a column rather than an interval (the join of Nexmark q4):
-- a bid matches its auction while the auction is open. An auction is kept until the watermark
-- passes its `expires`, a bid until the watermark passes its own time.
CREATE STREAM bc_auctions (id BIGINT, ts TIMESTAMP, expires TIMESTAMP)
  WITH (topic='in_bounded_by_column', timestamp='ts');
CREATE STREAM bc_bids (auction BIGINT, price BIGINT, ts TIMESTAMP)
  WITH (topic='in_bounded_by_column_bids', timestamp='ts');

CREATE STREAM out_bounded_by_column WITH (topic='out_bounded_by_column') AS
SELECT b.auction, b.price
FROM bc_auctions AS a
JOIN bc_bids AS b ON a.id = b.auction
WHERE b.ts BETWEEN a.ts AND a.expires;
