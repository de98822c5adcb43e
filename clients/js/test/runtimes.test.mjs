// The SDK inside an Edge runtime context (@edge-runtime/vm, the web-standard
// sandbox that Next.js middleware and Edge routes run in): no process, no
// Buffer, no require, no eval, only web APIs. The built CommonJS modules are
// wrapped in plain functions by a minimal loader that resolves nothing but the
// SDK's own relative modules, so a stray Node import or global fails here.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";

import { EdgeVM } from "@edge-runtime/vm";

import { API_KEY, GATEWAY_URL, JWT_SECRET, connectAs, uid } from "./helpers.mjs";

const CJS_DIR = new URL("../dist/cjs/", import.meta.url);

function edgeContextWithSdk() {
  const vm = new EdgeVM();
  const modules = readdirSync(CJS_DIR)
    .filter((name) => name.endsWith(".js"))
    .map((name) => {
      const source = readFileSync(new URL(name, CJS_DIR), "utf8");
      return `defs[${JSON.stringify(`./${name}`)}] = function (module, exports, require) {\n${source}\n};`;
    });
  vm.evaluate(`
    const defs = {};
    ${modules.join("\n")}
    const cache = {};
    globalThis.load = function load(spec) {
      if (!(spec in defs)) throw new Error("the Edge context cannot load " + spec);
      if (!cache[spec]) {
        cache[spec] = { exports: {} };
        defs[spec](cache[spec], cache[spec].exports, load);
      }
      return cache[spec].exports;
    };
  `);
  return vm;
}

test("in an Edge runtime context: emit, rooms, signToken and verifyWebhook work", async (t) => {
  const room = uid("edge");
  const socket = await connectAs(t, uid("edge-user"), { rooms: [room] });
  const body = '{"type":"connect","namespace":"/","socket":{"id":"x","user":null}}';
  const timestamp = String(Math.floor(Date.now() / 1000));
  const signature = `sha256=${createHmac("sha256", "hook-secret").update(`${timestamp}.${body}`).digest("hex")}`;

  const vm = edgeContextWithSdk();
  Object.assign(vm.context, { GATEWAY_URL, API_KEY, JWT_SECRET, room, body, signature, timestamp });
  const result = await vm.evaluate(`(async () => {
    const { Siogate, SiogateError, signToken, verifyWebhook } = load("./index.js");
    const siogate = new Siogate({ url: GATEWAY_URL, apiKey: API_KEY });
    await siogate.emit("from-edge", { ok: true }, { rooms: [room] });
    const { rooms } = await siogate.rooms();
    const refused = await siogate.emit("x", 1, { rooms: [] }).catch((e) => e);
    return {
      globals: [typeof process, typeof Buffer, typeof require],
      room: rooms.find((r) => r.name === room),
      refused: [refused instanceof SiogateError, refused.code, refused.status],
      token: await signToken({ sub: "edge", now: 1700000000, ttl: 60 }, JWT_SECRET),
      verified: await Promise.all(
        ["hook-secret", "other"].map((secret) =>
          verifyWebhook(body, signature, timestamp, secret).then(() => "ok", (e) => e.code),
        ),
      ),
    };
  })()`);

  assert.deepEqual(await socket.next("from-edge"), [{ ok: true }]);
  // Values cross realms: compare through JSON.
  assert.deepEqual(JSON.parse(JSON.stringify(result)), {
    globals: ["undefined", "undefined", "undefined"],
    room: { name: room, sockets: 1 },
    refused: [true, "invalid_field", 400],
    token: await (await import("siogate")).signToken({ sub: "edge", now: 1700000000, ttl: 60 }, JWT_SECRET),
    verified: ["ok", "signature_mismatch"],
  });
});
