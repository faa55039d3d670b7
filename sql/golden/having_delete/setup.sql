-- An updating aggregate with HAVING: when a group's row stops passing it, the row is deleted
-- from the output table (a tombstone: its key with no value), as ksqlDB does.
-- golden: ordered
CREATE STREAM hd_clicks (user_id VARCHAR, ts TIMESTAMP)
  WITH (topic='in_having_delete', timestamp='ts');

CREATE STREAM out_having_delete WITH (topic='out_having_delete') AS
SELECT user_id, COUNT(*) AS n FROM hd_clicks GROUP BY user_id HAVING COUNT(*) < 3;
