// verifyWebhook against signatures made by the real gateway: this file's
// node:http server is the gateway's --webhook-url (SIOGATE_WEBHOOK_PORT), and
// real socket.io-client sockets make the gateway call it.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { createHmac } from "node:crypto";

import { DEFAULT_TOLERANCE, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookVerificationError, verifyWebhook } from "siogate";

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
  const timestamp = req.headers[TIMESTAMP_HEADER];
  const verified = await verifyWebhook(raw, header, timestamp, WEBHOOK_SECRET).then(
    () => true,
    (error) => error.code,
  );
  received.push({ raw, header, timestamp, verified, payload: JSON.parse(raw.toString("utf8")) });
  for (const wake of waiters) wake();
  if (verified !== true) {
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

/** The code verifyWebhook rejects with, or "ok" when it resolves. */
function outcome(...args) {
  return verifyWebhook(...args).then(
    () => "ok",
    (error) => {
      assert.ok(error instanceof WebhookVerificationError, String(error));
      assert.ok(error instanceof Error);
      assert.equal(error.name, "WebhookVerificationError");
      assert.ok(error.message.length > 0);
      return error.code;
    },
  );
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
      assert.match(r.timestamp, /^[0-9]{10}$/);
      assert.ok(Math.abs(Date.now() / 1000 - Number(r.timestamp)) < 60, r.timestamp);
    }
    assert.deepEqual(event.payload, {
      type: "event",
      namespace: "/",
      socket: { id, user: sub },
      event: "echo",
      args: [text, "two"],
    });
  });

  test("every accepted body form verifies, and any change to body, header, timestamp or secret does not", async (t) => {
    const client = await connectAs(t, uid("forms"));
    await emitWithAck(client, "echo", { value: "ünïcode" });
    const { raw, header, timestamp } = await request(
      (r) => r.payload.type === "event" && r.payload.socket.id === client.id,
    );

    // Checked independently: the HMAC of "<timestamp>.<body>".
    const expected = createHmac("sha256", WEBHOOK_SECRET).update(`${timestamp}.`).update(raw).digest("hex");
    assert.equal(header, `sha256=${expected}`);

    const arrayBuffer = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    for (const body of [raw, new Uint8Array(raw), arrayBuffer, raw.toString("utf8"), new DataView(arrayBuffer)]) {
      assert.equal(await outcome(body, header, timestamp, WEBHOOK_SECRET), "ok", body.constructor.name);
    }
    // The gateway's own check accepts upper case and surrounding spaces; so does this one.
    const upper = `  SHA256=${header.slice(7).toUpperCase()} `;
    assert.equal(await outcome(raw, upper, ` ${timestamp} `, WEBHOOK_SECRET), "ok");
    assert.equal(await outcome(raw, header, timestamp, new TextEncoder().encode(WEBHOOK_SECRET)), "ok");

    const tampered = Buffer.from(raw);
    tampered[tampered.length - 2] ^= 1;
    const flipped = header.slice(0, -1) + (header.endsWith("0") ? "1" : "0");
    const refused = [
      ["signature_mismatch", tampered, header, timestamp, WEBHOOK_SECRET],
      ["signature_mismatch", raw.subarray(1), header, timestamp, WEBHOOK_SECRET],
      ["signature_mismatch", JSON.stringify(JSON.parse(raw), null, 1), header, timestamp, WEBHOOK_SECRET],
      ["signature_mismatch", raw, flipped, timestamp, WEBHOOK_SECRET],
      // The same body at another time: the timestamp is signed too.
      ["signature_mismatch", raw, header, String(Number(timestamp) + 1), WEBHOOK_SECRET],
      ["signature_mismatch", raw, header, timestamp, `${WEBHOOK_SECRET}x`],
      ["missing_signature", raw, null, timestamp, WEBHOOK_SECRET],
      ["missing_signature", raw, undefined, timestamp, WEBHOOK_SECRET],
      ["missing_timestamp", raw, header, null, WEBHOOK_SECRET],
      ["missing_timestamp", raw, header, undefined, WEBHOOK_SECRET],
      ["malformed_signature", raw, "", timestamp, WEBHOOK_SECRET],
      ["malformed_signature", raw, header.slice(7), timestamp, WEBHOOK_SECRET],
      ["malformed_signature", raw, `sha1=${header.slice(7)}`, timestamp, WEBHOOK_SECRET],
      ["malformed_signature", raw, header.slice(0, -2), timestamp, WEBHOOK_SECRET],
      ["malformed_signature", raw, `${header}00`, timestamp, WEBHOOK_SECRET],
      ["malformed_signature", raw, `${header.slice(0, -1)}g`, timestamp, WEBHOOK_SECRET],
      ["malformed_timestamp", raw, header, "", WEBHOOK_SECRET],
      ["malformed_timestamp", raw, header, `${timestamp}.5`, WEBHOOK_SECRET],
      ["malformed_timestamp", raw, header, "-1", WEBHOOK_SECRET],
      ["malformed_timestamp", raw, header, "1e9", WEBHOOK_SECRET],
    ];
    for (const [code, body, value, ts, secret] of refused) {
      assert.equal(await outcome(body, value, ts, secret), code, `header ${value}, timestamp ${ts}`);
    }
  });

  test("a request replayed after the tolerance, or from a clock ahead, is refused", async (t) => {
    const client = await connectAs(t, uid("replay"));
    await emitWithAck(client, "echo", 1);
    const { raw, header, timestamp } = await request(
      (r) => r.payload.type === "event" && r.payload.socket.id === client.id,
    );
    const sent = Number(timestamp);
    assert.equal(DEFAULT_TOLERANCE, 300);
    const check = (options) => outcome(raw, header, timestamp, WEBHOOK_SECRET, options);
    assert.equal(await check({ now: sent + 300 }), "ok");
    assert.equal(await check({ now: sent - 300 }), "ok");
    assert.equal(await check({ now: sent + 301 }), "timestamp_too_old");
    assert.equal(await check({ now: sent - 301 }), "timestamp_in_future");
    assert.equal(await check({ now: sent + 3000, tolerance: 3600 }), "ok");
    assert.equal(await check({ now: sent + 11, tolerance: 10 }), "timestamp_too_old");
    // A wrong secret is reported as such even on an old request.
    assert.equal(await outcome(raw, header, timestamp, "other", { now: sent + 10_000 }), "signature_mismatch");
    const error = await verifyWebhook(raw, header, timestamp, WEBHOOK_SECRET, { now: sent + 301 }).catch((e) => e);
    assert.match(error.message, /signed 301 s ago, more than the 300 s tolerance/);
    for (const tolerance of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(verifyWebhook(raw, header, timestamp, WEBHOOK_SECRET, { tolerance }), RangeError);
    }
  });
});
