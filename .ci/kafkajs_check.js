// kafkajs (pure JavaScript, its own version negotiation) against a real `strom server`:
// create a topic, produce keyed records, consume them in a group with commits.
const { Kafka, logLevel } = require("kafkajs");

const broker = process.argv[2];
const kafka = new Kafka({ clientId: "kafkajs-check", brokers: [broker], logLevel: logLevel.NOTHING });
const topic = "kafkajs";

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] });
  await admin.disconnect();

  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  const sent = new Set();
  for (let batch = 0; batch < 10; batch++) {
    const messages = [];
    for (let i = 0; i < 100; i++) {
      const n = batch * 100 + i;
      messages.push({ key: `k${n % 13}`, value: `value-${n}`, headers: { n: String(n) } });
      sent.add(`value-${n}`);
    }
    await producer.send({ topic, acks: -1, messages });
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: "kafkajs-group", sessionTimeout: 10000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = new Set();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out with ${got.size} of ${sent.size}`)), 60000);
    consumer.run({
      eachMessage: async ({ message }) => {
        const v = message.value.toString();
        if (message.headers.n.toString() !== v.slice("value-".length)) reject(new Error(`header mismatch on ${v}`));
        got.add(v);
        if (got.size === sent.size) {
          clearTimeout(timer);
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  const missing = [...sent].filter((v) => !got.has(v));
  if (missing.length > 0) throw new Error(`missing ${missing.length} records`);
  console.log("kafkajs: 1 passed, 0 failed");
}

main().then(
  () => process.exit(0),
  (e) => {
    console.log(`kafkajs check FAILED: ${e.message}`);
    process.exit(1);
  },
);
