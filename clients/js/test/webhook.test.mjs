// verifyWebhook against signatures made by the real gateway: this file's
// node:http server is the gateway's --webhook-url (SIOGATE_WEBHOOK_PORT), and
// real socket.io-client sockets make the gateway call it.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { SIGNATURE_HEADER, verifyWebhook } from "siogate";

import { WAIT_MS, WEBHOOK_PORT, WEBHOOK_SECRET, connectAs, uid } from "./helpers.mjs";

/** Every request the gateway made, with its raw body, and waiters for the next ones. */
const received = [];
const waiters = new Set();

// Answers the way a backend would: verify first, over the raw bytes, and refuse
// what does not verify; echo the args of "echo" events as the ack.
const server = createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks);
  const header = req.headers[SIGNATURE_HEADER];
  const verified = await verifyWebhook(raw, header, WEBHOOK_SECRET);
  received.push({ raw, header, verified, payload: JSON.parse(raw.toString("utf8")) });
  for (const wake of waiters) wake();
  if (!verified) {
    res.writeHead(401).end();
    return;
  }
  const payload = JSON.parse(raw);
  const reply = payload.type === "event" && payload.event === "echo" ? { ack: payload.args } : {};
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(reply));
});

before(async () => {
  server.listen(WEBHOOK_PORT, "127.0.0.1");
  await once(server, "listening");
});
after(() => {
  server.closeAllConnections();
  server.close();
});

/** The first request matching `match`, waiting up to WAIT_MS for it. */
function request(match) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const found = received.find(match);
      if (!found) return;
      waiters.delete(check);
      clearTimeout(timer);
      resolve(found);
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`no matching webhook request within ${WAIT_MS} ms`));
    }, WAIT_MS);
    waiters.add(check);
    check();
  });
}

/** Emit `event` from a real socket and resolve with all the arguments of its ack. */
function emitWithAck(client, event, ...args) {
  return new Promise((resolve, reject) => {
    client.socket.timeout(WAIT_MS).emit(event, ...args, (error, ...ack) => (error ? reject(error) : resolve(ack)));
  });
}

describe("verifyWebhook with the gateway's own signatures", () => {
  test("connect, event and disconnect requests verify, and a verified echo becomes the ack", async (t) => {
    const sub = uid("hooked");
    const client = await connectAs(t, sub);
    const id = client.id;
    const text = { text: "hi ü 😀", n: [1, 2.5, null] };
    assert.deepEqual(await emitWithAck(client, "echo", text, "two"), [text, "two"]);
    client.close();

    const connect = await request((r) => r.payload.type === "connect" && r.payload.socket.id === id);
    const event = await request((r) => r.payload.type === "event" && r.payload.socket.id === id);
    const disconnect = await request((r) => r.payload.type === "disconnect" && r.payload.socket.id === id);
    for (const r of [connect, event, disconnect]) {
      assert.equal(r.verified, true, r.raw.toString());
      assert.match(r.header, /^sha256=[0-9a-f]{64}$/);
    }
    assert.deepEqual(event.payload, {
      type: "event",
      namespace: "/",
      socket: { id, user: sub },
      event: "echo",
      args: [text, "two"],
    });
  });

  test("every accepted body form verifies, and any change to body, header or secret does not", async (t) => {
    const client = await connectAs(t, uid("forms"));
    await emitWithAck(client, "echo", { value: "ünïcode" });
    const { raw, header } = await request((r) => r.payload.type === "event" && r.payload.socket.id === client.id);

    const arrayBuffer = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    for (const body of [raw, new Uint8Array(raw), arrayBuffer, raw.toString("utf8"), new DataView(arrayBuffer)]) {
      assert.equal(await verifyWebhook(body, header, WEBHOOK_SECRET), true, body.constructor.name);
    }
    // The gateway's own check accepts upper case and surrounding spaces; so does this one.
    assert.equal(await verifyWebhook(raw, `  SHA256=${header.slice(7).toUpperCase()} `, WEBHOOK_SECRET), true);
    assert.equal(await verifyWebhook(raw, header, new TextEncoder().encode(WEBHOOK_SECRET)), true);

    const tampered = Buffer.from(raw);
    tampered[tampered.length - 2] ^= 1;
    const flipped = header.slice(0, -1) + (header.endsWith("0") ? "1" : "0");
    const refused = [
      [tampered, header, WEBHOOK_SECRET],
      [raw.subarray(1), header, WEBHOOK_SECRET],
      [JSON.stringify(JSON.parse(raw), null, 1), header, WEBHOOK_SECRET],
      [raw, flipped, WEBHOOK_SECRET],
      [raw, header, `${WEBHOOK_SECRET}x`],
      [raw, null, WEBHOOK_SECRET],
      [raw, undefined, WEBHOOK_SECRET],
      [raw, "", WEBHOOK_SECRET],
      [raw, header.slice(7), WEBHOOK_SECRET],
      [raw, `sha1=${header.slice(7)}`, WEBHOOK_SECRET],
      [raw, header.slice(0, -2), WEBHOOK_SECRET],
      [raw, `${header}00`, WEBHOOK_SECRET],
      [raw, `${header.slice(0, -1)}g`, WEBHOOK_SECRET],
    ];
    for (const [body, value, secret] of refused) {
      assert.equal(await verifyWebhook(body, value, secret), false, `header ${value}`);
    }
  });
});
