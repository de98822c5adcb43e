// signToken: tokens the real gateway accepts, with the claims it honours, and
// the refusals it gives for expired or foreign tokens.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import { promisify } from "node:util";

import { Siogate, SiogateError, signToken } from "siogate";

import { API_KEY, GATEWAY_URL, JWT_SECRET, connect, members, uid } from "./helpers.mjs";

const siogate = new Siogate({ url: GATEWAY_URL, apiKey: API_KEY });

function claims(token) {
  const [header, payload] = token.split(".").slice(0, 2).map((part) => JSON.parse(Buffer.from(part, "base64url")));
  return { header, payload };
}

describe("signToken", () => {
  test("the gateway accepts it: the socket is the user and sits in the token's rooms", async (t) => {
    const sub = uid("alice");
    const rooms = [uid("news"), uid("room with / and ü")];
    const token = await signToken({ sub, rooms, ttl: 60 }, JWT_SECRET);
    const socket = await connect(t, { token });
    assert.deepEqual(members(await siogate.sockets(`user:${sub}`)), [{ id: socket.id, user: sub }]);
    for (const room of rooms) assert.deepEqual(members(await siogate.sockets(room)), [{ id: socket.id, user: sub }]);
  });

  test("claims: HS256 header, whole-second iat and exp, rooms only when given", async () => {
    const token = await signToken({ sub: "42", ttl: 90.9, now: 1_000.7 }, JWT_SECRET);
    assert.deepEqual(claims(token), {
      header: { alg: "HS256", typ: "JWT" },
      payload: { iat: 1000, exp: 1091, sub: "42" },
    });
    const before = Math.floor(Date.now() / 1000);
    const { payload } = claims(await signToken({ rooms: ["a"] }, JWT_SECRET));
    assert.ok(payload.iat >= before && payload.exp === payload.iat + 3600);
    assert.deepEqual(payload.rooms, ["a"]);
    assert.equal("sub" in payload, false);
  });

  test("a token without sub connects as a socket with no user", async (t) => {
    const room = uid("anon");
    const socket = await connect(t, { token: await signToken({ rooms: [room] }, JWT_SECRET) });
    assert.deepEqual(members(await siogate.sockets(room)), [{ id: socket.id, user: null }]);
  });

  test("an expired token is refused by the gateway with 'token expired'", async (t) => {
    const token = await signToken({ sub: uid("late"), ttl: 60, now: Date.now() / 1000 - 3600 }, JWT_SECRET);
    await assert.rejects(connect(t, { token }), { message: "token expired" });
  });

  test("a token signed with another secret is refused with 'invalid token'", async (t) => {
    const token = await signToken({ sub: uid("mallory") }, `${JWT_SECRET}-not`);
    await assert.rejects(connect(t, { token }), { message: "invalid token" });
  });

  test("the secret may be bytes", async (t) => {
    const token = await signToken({ sub: uid("bytes") }, new TextEncoder().encode(JWT_SECRET));
    await connect(t, { token });
  });

  test("values the gateway would refuse throw before signing", async () => {
    const bad = [
      [{ sub: "" }, TypeError],
      [{ sub: 42 }, TypeError],
      [{ sub: "x".repeat(257) }, TypeError],
      [{ rooms: [""] }, TypeError],
      [{ rooms: "news" }, TypeError],
      [{ rooms: Array.from({ length: 101 }, (_, i) => `r${i}`) }, TypeError],
      [{ ttl: 0 }, RangeError],
      [{ ttl: Number.NaN }, RangeError],
    ];
    for (const [options, type] of bad) {
      await assert.rejects(signToken(options, JWT_SECRET), type, JSON.stringify(options));
    }
    await assert.rejects(signToken({ sub: "a" }, ""), RangeError);
  });

  test("names are measured in characters, as the gateway does: 256 emoji are allowed", async (t) => {
    const sub = "😀".repeat(256);
    const socket = await connect(t, { token: await signToken({ sub }, JWT_SECRET) });
    assert.deepEqual(members(await siogate.sockets(socket.id)), [{ id: socket.id, user: sub }]);
    await assert.rejects(signToken({ sub: "😀".repeat(257) }, JWT_SECRET), TypeError);
  });
});

describe("builds", () => {
  test("the CommonJS build signs the same token, and its errors are instanceof the ESM class", async () => {
    const require = createRequire(import.meta.url);
    const cjs = require("siogate");
    const options = { sub: "same", rooms: ["r"], now: 1_700_000_000 };
    assert.equal(await cjs.signToken(options, JWT_SECRET), await signToken(options, JWT_SECRET));
    const error = await new cjs.Siogate({ url: GATEWAY_URL, apiKey: "wrong" }).emit("x").catch((e) => e);
    assert.notEqual(cjs.SiogateError, SiogateError);
    assert.ok(error instanceof SiogateError && error instanceof cjs.SiogateError);
    assert.ok(!(new Error("plain") instanceof SiogateError));
  });

  test("without a global crypto (Node 18), Web Crypto comes from node:crypto", async () => {
    const script = `
      delete globalThis.crypto;
      if (globalThis.crypto !== undefined) throw new Error("crypto is still global");
      const { signToken, verifyWebhook } = await import("siogate");
      const token = await signToken({ sub: "a", now: 1_700_000_000 }, "s");
      const verified = await verifyWebhook("{}", "sha256=" + "0".repeat(64), "1700000000", "s").then(() => "ok", (e) => e.code);
      process.stdout.write(JSON.stringify([token, verified]));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
      cwd: new URL("..", import.meta.url),
    });
    const [token, verified] = JSON.parse(stdout);
    assert.equal(token, await signToken({ sub: "a", now: 1_700_000_000 }, "s"));
    assert.equal(verified, "signature_mismatch");
  });
});
