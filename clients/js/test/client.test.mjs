// Siogate against the real gateway: what each method sends is checked by
// what real socket.io-client sockets receive, and by the gateway's own answers.
//
// Negative checks ("b must not get X") are closed with a sentinel: the gateway
// applies emits in order, so once a later emit to the same socket has
// arrived, an earlier one that did not arrive never will.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Siogate, SiogateError } from "siogate";

import { API_KEY, GATEWAY_URL, connectAs, members, uid } from "./helpers.mjs";

const siogate = new Siogate({ url: GATEWAY_URL, apiKey: API_KEY });

/** The rejection of `promise`, which must be a SiogateError. */
async function failure(promise) {
  const error = await promise.then(
    () => assert.fail("expected the call to reject"),
    (e) => e,
  );
  assert.ok(error instanceof SiogateError, `not a SiogateError: ${error}`);
  return error;
}

describe("emit", () => {
  test("data reaches the sockets of the rooms given, once each, and not those of except", async (t) => {
    const news = uid("news");
    const [alice, bob, carol] = await Promise.all([
      connectAs(t, uid("alice"), { rooms: [news] }),
      connectAs(t, uid("bob"), { rooms: [news] }),
      connectAs(t, uid("carol")),
    ]);
    const bobRoom = `user:${members(await siogate.sockets(bob.id))[0].user}`;

    await siogate.emit("headline", { title: "hi", n: [1, null, true] }, { rooms: [news, alice.id], except: [bobRoom] });
    await siogate.emit("sentinel", null, { rooms: [bob.id, carol.id, alice.id] });

    assert.deepEqual(await alice.next("headline"), [{ title: "hi", n: [1, null, true] }]);
    await Promise.all([alice.next("sentinel"), bob.next("sentinel"), carol.next("sentinel")]);
    assert.deepEqual(alice.names(), ["headline", "sentinel"], "alice is in both rooms but gets it once");
    assert.deepEqual(bob.names(), ["sentinel"], "bob is in except");
    assert.deepEqual(carol.names(), ["sentinel"], "carol is in no target room");
  });

  test("data null is one null argument, undefined is no argument", async (t) => {
    const a = await connectAs(t, uid("u"));
    await siogate.emit("with-null", null, { rooms: [a.id] });
    await siogate.emit("without", undefined, { rooms: [a.id] });
    assert.deepEqual(await a.next("with-null"), [null]);
    assert.deepEqual(await a.next("without"), []);
  });

  test("the body form sends args as separate arguments", async (t) => {
    const a = await connectAs(t, uid("u"));
    await siogate.emit({ event: "multi", args: [1, "two", null, { three: 3 }], rooms: [a.id] });
    assert.deepEqual(await a.next("multi"), [1, "two", null, { three: 3 }]);
  });

  test("without rooms, every socket of the namespace gets it; namespace selects the namespace", async (t) => {
    const [root, admin] = await Promise.all([connectAs(t, uid("u")), connectAs(t, uid("u"), { namespace: "/admin" })]);
    const event = uid("broadcast");
    await siogate.emit(event, "to-admin", { namespace: "/admin" });
    await siogate.emit("sentinel", 0, { rooms: [root.id] });
    assert.deepEqual(await admin.next(event), ["to-admin"]);
    await root.next("sentinel");
    assert.ok(!root.names().includes(event), "a socket of / got an emit to /admin");
  });

  test("an empty rooms list is sent as is, and refused", async () => {
    const error = await failure(siogate.emit("x", 1, { rooms: [] }));
    assert.equal(error.code, "invalid_field");
    assert.equal(error.status, 400);
    assert.match(error.message, /rooms must not be empty/);
  });

  test("gateway refusals keep their code, status and message", async () => {
    const reserved = await failure(siogate.emit("connect", 1));
    assert.deepEqual([reserved.code, reserved.status], ["reserved_event", 400]);

    const namespace = await failure(siogate.emit("x", 1, { namespace: "/nope" }));
    assert.deepEqual([namespace.code, namespace.status], ["unknown_namespace", 400]);

    const both = await failure(siogate.emit({ event: "x", data: 1, args: [1] }));
    assert.deepEqual([both.code, both.status], ["invalid_field", 400]);
    assert.match(both.message, /either data or args/);

    const typo = await failure(siogate.emit({ event: "x", room: ["news"] }));
    assert.equal(typo.code, "invalid_field");
    assert.match(typo.message, /unknown field\(s\) in body: room/);
  });
});

describe("batch", () => {
  test("applies the emits in order and returns the count", async (t) => {
    const a = await connectAs(t, uid("u"));
    const result = await siogate.batch([
      { event: "first", data: 1, rooms: [a.id] },
      { event: "second", args: [2, 3], rooms: [a.id] },
      { event: "third", rooms: [a.id] },
    ]);
    assert.deepEqual(result, { count: 3 });
    await a.next("third");
    assert.deepEqual(a.events, [
      { event: "first", args: [1] },
      { event: "second", args: [2, 3] },
      { event: "third", args: [] },
    ]);
  });

  test("one bad entry refuses the whole batch, naming the entry", async (t) => {
    const a = await connectAs(t, uid("u"));
    const error = await failure(siogate.batch([{ event: "ok", rooms: [a.id] }, { data: 1 }]));
    assert.deepEqual([error.code, error.status], ["invalid_field", 400]);
    assert.match(error.message, /emits\[1\]: event is required/);
    await siogate.emit("sentinel", null, { rooms: [a.id] });
    await a.next("sentinel");
    assert.deepEqual(a.names(), ["sentinel"]);
  });
});

describe("rooms", () => {
  test("join by socket id and by room selector, leave, and the listings", async (t) => {
    const [alice, bob] = await Promise.all([connectAs(t, uid("alice")), connectAs(t, uid("bob"))]);
    const [aliceUser] = members(await siogate.sockets(alice.id));
    const vip = uid("vip/room with spaces?&%25#");

    await siogate.join({ room: vip, sockets: [alice.id, "no-such-socket"] });
    await siogate.join({ room: vip, rooms: [bob.id] });
    const inVip = members(await siogate.sockets(vip));
    assert.deepEqual(
      inVip.map((s) => s.id).sort(),
      [alice.id, bob.id].sort(),
    );
    assert.deepEqual(
      inVip.find((s) => s.id === alice.id),
      { id: alice.id, user: aliceUser.user },
    );
    assert.deepEqual(
      (await siogate.rooms()).rooms.find((r) => r.name === vip),
      { name: vip, sockets: 2 },
    );

    await siogate.emit("vip-news", "x", { rooms: [vip] });
    await Promise.all([alice.next("vip-news"), bob.next("vip-news")]);

    await siogate.leave({ room: vip, sockets: [bob.id] });
    assert.deepEqual(
      members(await siogate.sockets(vip)).map((s) => s.id),
      [alice.id],
    );
    await siogate.leave({ room: vip, rooms: [alice.id] });
    assert.deepEqual(members(await siogate.sockets(vip)), []);
    assert.equal(
      (await siogate.rooms()).rooms.find((r) => r.name === vip),
      undefined,
    );
  });

  test("listings of another namespace", async (t) => {
    const room = uid("admins");
    const a = await connectAs(t, uid("u"), { namespace: "/admin", rooms: [room] });
    const [self] = members(await siogate.sockets(a.id, { namespace: "/admin" }));
    assert.deepEqual(members(await siogate.sockets(room, { namespace: "/admin" })), [self]);
    assert.deepEqual(members(await siogate.sockets(room)), []);
    assert.ok((await siogate.rooms({ namespace: "/admin" })).rooms.some((r) => r.name === room));
    assert.ok(!(await siogate.rooms()).rooms.some((r) => r.name === room));
  });

  test("join needs exactly one selector", async (t) => {
    const a = await connectAs(t, uid("u"));
    const error = await failure(siogate.join({ room: "r", sockets: [a.id], rooms: ["x"] }));
    assert.deepEqual([error.code, error.status], ["invalid_field", 400]);
    assert.match(error.message, /exactly one of sockets/);
  });
});

describe("pages and presence", () => {
  test("sockets() pages by id with limit and cursor; presence() and roomPresence()", async (t) => {
    const room = uid("paged/room?");
    const user = uid("erin");
    const sockets = await Promise.all([1, 2, 3].map(() => connectAs(t, user, { rooms: [room] })));
    const seen = [];
    let cursor;
    do {
      const page = await siogate.sockets(room, { limit: 2, cursor });
      assert.ok(page.sockets.length <= 2);
      seen.push(...page.sockets.map((s) => s.id));
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
    assert.deepEqual(seen, sockets.map((s) => s.id).sort());

    const away = uid("away");
    const presence = await siogate.presence([user, away, "a&b=c"]);
    assert.deepEqual(presence.users, {
      [user]: { online: true, sockets: 3 },
      [away]: { online: false, sockets: 0 },
      "a&b=c": { online: false, sockets: 0 },
    });
    const inRoom = await siogate.roomPresence(room, { limit: 10 });
    assert.deepEqual([inRoom.users, inRoom.anonymous, inRoom.next_cursor], [[{ user, sockets: 3 }], 0, null]);

    const first = await siogate.rooms({ limit: 1 });
    assert.equal(first.rooms.length, 1);
    assert.equal(typeof first.next_cursor, "string");
    const error = await failure(siogate.sockets(room, { cursor: "nope" }));
    assert.deepEqual([error.code, error.status], ["invalid_cursor", 400]);
    await assert.rejects(siogate.rooms({ limit: 0 }), RangeError);
    await assert.rejects(siogate.presence("alice"), TypeError);
  });
});

describe("disconnect", () => {
  test("disconnects the selected sockets only", async (t) => {
    const bobName = uid("bob");
    const [alice, bob] = await Promise.all([connectAs(t, uid("alice")), connectAs(t, bobName)]);
    await siogate.disconnect({ rooms: [`user:${bobName}`] });
    assert.equal(await bob.disconnected(), "io server disconnect");
    assert.deepEqual(members(await siogate.sockets(`user:${bobName}`)), []);
    await siogate.emit("still-here", 1, { rooms: [alice.id] });
    await alice.next("still-here");

    await siogate.disconnect({ sockets: [alice.id] });
    assert.equal(await alice.disconnected(), "io server disconnect");
  });
});

describe("errors", () => {
  test("a wrong API key is unauthorized, 401", async () => {
    const wrong = new Siogate({ url: GATEWAY_URL, apiKey: "not-the-key" });
    const error = await failure(wrong.emit("x", 1));
    assert.deepEqual([error.code, error.status], ["unauthorized", 401]);
    assert.equal(error.name, "SiogateError");
    assert.ok(error instanceof Error);
    assert.ok(!error.message.includes("not-the-key"));
    // GETs are not retried on 4xx either: the key does not get better.
    assert.deepEqual(
      [(await failure(wrong.rooms())).status, (await failure(wrong.sockets("r"))).status],
      [401, 401],
    );
  });

  test("a path prefix the gateway does not serve is not_found, 404", async () => {
    const prefixed = new Siogate({ url: `${GATEWAY_URL}/prefix/`, apiKey: API_KEY });
    const error = await failure(prefixed.emit("x", 1));
    assert.deepEqual([error.code, error.status], ["not_found", 404]);
  });

  test("nothing listening is network_error, status 0", async () => {
    const { createServer } = await import("node:net");
    const server = createServer();
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address();
    await new Promise((resolve) => server.close(resolve));
    const dead = new Siogate({ url: `http://127.0.0.1:${port}`, apiKey: API_KEY, retries: 0 });
    const error = await failure(dead.emit("x", 1));
    assert.deepEqual([error.code, error.status], ["network_error", 0]);
    assert.match(error.message, /ECONNREFUSED/);
    assert.ok(error.cause, "the fetch error is kept as cause");
  });

  test("arguments no request could fix throw at once", () => {
    assert.throws(() => new Siogate({ url: "127.0.0.1:8000", apiKey: API_KEY }), TypeError);
    assert.throws(() => new Siogate({ url: GATEWAY_URL, apiKey: "" }), TypeError);
    assert.throws(() => new Siogate({ url: GATEWAY_URL, apiKey: API_KEY, timeout: -1 }), RangeError);
    assert.throws(() => new Siogate({ url: GATEWAY_URL, apiKey: API_KEY, retries: 1.5 }), RangeError);
  });

  test("a value JSON cannot hold is a TypeError, and nothing is sent", async () => {
    await assert.rejects(siogate.emit("x", { big: 1n }), TypeError);
  });
});
