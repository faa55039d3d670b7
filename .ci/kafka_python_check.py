"""kafka-python (a client that negotiates versions on its own) against a real `strom server`:
admin create topic, produce keyed records with gzip, consume them in a group, commit, and read
the committed offsets back. Prints one summary line; exits non-zero on any mismatch."""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

broker = sys.argv[1]
topic = "kafka-python"
admin = KafkaAdminClient(bootstrap_servers=broker, request_timeout_ms=10000)
admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])

producer = KafkaProducer(bootstrap_servers=broker, acks="all", compression_type="gzip", linger_ms=5)
sent = {}
for i in range(1000):
    key, value = f"k{i % 17}".encode(), f"value-{i}".encode()
    meta = producer.send(topic, key=key, value=value, headers=[("n", str(i).encode())]).get(timeout=30)
    sent[(meta.partition, meta.offset)] = (key, value, str(i).encode())
producer.flush()

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=broker,
    group_id="kafka-python-group",
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    session_timeout_ms=10000,
    consumer_timeout_ms=15000,
)
got = {}
deadline = time.time() + 60
while len(got) < len(sent) and time.time() < deadline:
    for tp, records in consumer.poll(timeout_ms=500).items():
        for r in records:
            got[(r.partition, r.offset)] = (r.key, r.value, dict(r.headers)["n"])
consumer.commit()
committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
consumer.close()

if got != sent:
    print(f"kafka-python check FAILED: sent {len(sent)} records, got {len(got)} (or different bytes)")
    sys.exit(1)
ends = {}
for (p, o) in sent:
    ends[p] = max(ends.get(p, -1), o + 1)
if any(committed[p] != ends.get(p, 0) for p in range(3)):
    print(f"kafka-python check FAILED: committed {committed}, log ends {ends}")
    sys.exit(1)
listed = admin.list_groups()
groups = [g["group_id"] if isinstance(g, dict) else (g if isinstance(g, str) else g[0]) for g in listed]
if "kafka-python-group" not in groups:
    print(f"kafka-python check FAILED: group not listed: {groups}")
    sys.exit(1)
print("kafka-python: 1 passed, 0 failed")
