// One MQTT.js client over ws:// or wss:// (as a browser connects): subscribe,
// publish N messages at QoS 1 to itself, and check they come back in order.
// Usage: node roundtrip.js URL CLIENT_ID TOPIC COUNT PROTOCOL_VERSION [CA_FILE]
// Prints one JSON line; exits 0 only when every message came back in order.
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const [url, clientId, topic, countText, versionText, caFile] = process.argv.slice(2);
const count = Number(countText);
const options = {
  clientId,
  protocolVersion: Number(versionText),
  reconnectPeriod: 0,
  connectTimeout: 10000,
};
if (caFile) {
  options.ca = fs.readFileSync(caFile);
  options.rejectUnauthorized = true;
}

const received = [];
// Set once every message came back in order: what the close does after that (the
// broker closes without waiting for the WebSocket closing handshake, so the client's
// answer to its Close frame can meet a closed socket) is not what this checks.
let passed = false;
const client = mqtt.connect(url, options);
const fail = (why) => {
  if (passed) return;
  console.log(JSON.stringify({ ok: false, why: String(why), received: received.length }));
  process.exit(1);
};
setTimeout(() => fail("timed out"), 20000).unref();
client.on("error", fail);
client.on("message", (t, payload) => {
  received.push(payload.toString());
  if (received.length === count) {
    const inOrder = received.every((p, i) => p === `m${i}`);
    passed = inOrder;
    console.log(JSON.stringify({ ok: inOrder, received: received.length, topic: t }));
    client.end(false, () => process.exit(inOrder ? 0 : 1));
  }
});
client.on("connect", () => {
  client.subscribe(topic, { qos: 1 }, (err, granted) => {
    if (err || granted[0].qos !== 1) return fail(err || `granted ${JSON.stringify(granted)}`);
    for (let i = 0; i < count; i++) client.publish(topic, `m${i}`, { qos: 1 });
  });
});
