// history(): GET /v1/rooms/<room>/history (the gateway runs with --history-size 100).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Siogate } from "siogate";

import { API_KEY, GATEWAY_URL, uid } from "./helpers.mjs";

const siogate = new Siogate({ url: GATEWAY_URL, apiKey: API_KEY });

async function emitOffset(room, n) {
  const response = await fetch(`${GATEWAY_URL}/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ event: "msg", data: { n }, rooms: [room] }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).offset;
}

test("history() lists a room's events oldest first, and what came after an offset", async () => {
  const room = uid("history");
  const offsets = [];
  for (let n = 0; n < 4; n += 1) offsets.push(await emitOffset(room, n));
  await siogate.emit("msg", { n: 4 }, { rooms: [room] });

  const all = await siogate.history(room);
  assert.equal(all.complete, true);
  assert.deepEqual(
    all.messages.map((m) => [m.event, m.data]),
    [0, 1, 2, 3, 4].map((n) => ["msg", [{ n }]]),
  );
  assert.deepEqual(all.messages.slice(0, 4).map((m) => m.offset), offsets);
  assert.ok(all.messages.every((m) => Number.isInteger(m.ts)));

  const after = await siogate.history(room, { since: offsets[2], limit: 1 });
  assert.deepEqual(after.messages.map((m) => m.data[0].n), [3]);
  assert.equal(after.complete, false); // the limit cut one

  await assert.rejects(siogate.history(room, { since: "nope" }), (err) => err.status === 400);
});
