// emitWithAck against the real gateway: real socket.io-client sockets answer the
// way applications do, socket.on(event, (data, cb) => cb(reply)).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Siogate, SiogateError } from "siogate";

import { API_KEY, GATEWAY_URL, connectAs, uid } from "./helpers.mjs";

// A client timeout shorter than the ack wait: emitWithAck extends it by ackTimeout.
const siogate = new Siogate({ url: GATEWAY_URL, apiKey: API_KEY, timeout: 1_000 });

test("emitWithAck returns each recipient's reply and the silent ones as timeouts", async (t) => {
  const room = uid("ack");
  const [a, b, mute] = await Promise.all([
    connectAs(t, uid("a"), { rooms: [room] }),
    connectAs(t, uid("b"), { rooms: [room] }),
    connectAs(t, uid("mute"), { rooms: [room] }),
  ]);
  for (const [client, name] of [[a, "a"], [b, "b"]]) {
    client.socket.on("ask", (data, cb) => cb({ name, got: data }));
  }
  mute.socket.on("ask", () => {});

  const result = await siogate.emitWithAck("ask", { q: 1 }, { rooms: [room], ackTimeout: 1_500 });
  assert.equal(result.recipients, 3);
  assert.deepEqual(result.timeouts, [mute.id]);
  const replies = Object.fromEntries(result.acks.map(({ socket, args }) => [socket, args]));
  assert.deepEqual(replies, {
    [a.id]: [{ name: "a", got: { q: 1 } }],
    [b.id]: [{ name: "b", got: { q: 1 } }],
  });

  // The body form.
  const one = await siogate.emitWithAck({ event: "ask", data: 2, rooms: [a.id] }, { ackTimeout: 2_000 });
  assert.deepEqual(one.acks, [{ socket: a.id, args: [{ name: "a", got: 2 }] }]);
  assert.deepEqual(one.timeouts, []);
});

test("emitWithAck checks ackTimeout before sending, and batch refuses ack", async () => {
  await assert.rejects(siogate.emitWithAck("ask", 1, { ackTimeout: 0 }), RangeError);
  await assert.rejects(siogate.emitWithAck("ask", 1, { ackTimeout: 60_001 }), RangeError);
  const error = await siogate.batch([{ event: "a", ack: { timeout_ms: 5 } }]).then(
    () => assert.fail("expected a refusal"),
    (e) => e,
  );
  assert.ok(error instanceof SiogateError);
  assert.equal(error.code, "ack_in_batch");
});
