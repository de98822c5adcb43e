// Timeouts, aborts and retries. The failures come from a small fault-injecting
// HTTP proxy (node:http) in front of the real gateway: each request it gets
// takes the next step of its plan (forward to the gateway, reset the
// connection, answer a status, or stall), so everything that does get through
// is answered by the gateway itself.

import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import { after, before, beforeEach, describe, test } from "node:test";

import { Siogate, SiogateError } from "siogate";

import { API_KEY, GATEWAY_URL, connectAs, members, uid } from "./helpers.mjs";

class FaultProxy {
  constructor() {
    this.plan = [];
    this.seen = [];
    this.keys = []; // the Idempotency-Key of each request (undefined: none)
    this.server = createServer((req, res) => this.#handle(req, res));
  }

  async start() {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    this.url = `http://127.0.0.1:${this.server.address().port}`;
  }

  async stop() {
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, "close");
  }

  async #handle(req, res) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const step = this.plan.shift() ?? "forward";
    this.seen.push(`${req.method} ${req.url} ${step}`);
    this.keys.push(req.headers["idempotency-key"]);
    if (step === "reset") {
      req.socket.destroy();
    } else if (step === "stall") {
      // Never answer; the connection is closed by stop() or by the client.
    } else if (step === "stall-body") {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"rooms":');
    } else if (step === "redirect") {
      res.writeHead(307, { location: GATEWAY_URL + req.url }).end();
    } else if (step === "html") {
      res.writeHead(502, { "content-type": "text/html" }).end("<h1>Bad Gateway</h1>");
    } else if (step.startsWith("status:")) {
      const status = Number(step.slice("status:".length));
      res.writeHead(status, { "content-type": "application/json" }).end('{"detail":"proxy"}');
    } else {
      const key = req.headers["idempotency-key"];
      const answer = await fetch(GATEWAY_URL + req.url, {
        method: req.method,
        headers: {
          authorization: req.headers.authorization ?? "",
          ...(key === undefined ? {} : { "idempotency-key": key }),
        },
        body: req.method === "POST" ? Buffer.concat(chunks) : undefined,
      });
      // "forward-lose": applied by the gateway, but the answer never comes back.
      if (step === "forward-lose") return void req.socket.destroy();
      res.writeHead(answer.status, { "content-type": "application/json" }).end(await answer.text());
    }
  }
}

const proxy = new FaultProxy();
before(() => proxy.start());
after(() => proxy.stop());
beforeEach(() => {
  proxy.plan = [];
  proxy.seen = [];
  proxy.keys = [];
});

function client(options = {}) {
  return new Siogate({ url: proxy.url, apiKey: API_KEY, ...options });
}

async function failure(promise) {
  const error = await promise.then(
    () => assert.fail("expected the call to reject"),
    (e) => e,
  );
  assert.ok(error instanceof SiogateError, `not a SiogateError: ${error}`);
  return error;
}

describe("timeouts", () => {
  test("no answer within the client's timeout is code timeout, status 0", async () => {
    proxy.plan = ["stall"];
    const started = performance.now();
    const error = await failure(client({ timeout: 200, retries: 0 }).emit("x", 1));
    const elapsed = performance.now() - started;
    assert.deepEqual([error.code, error.status], ["timeout", 0]);
    assert.match(error.message, /POST \/v1\/emit: no complete answer within 200 ms/);
    assert.ok(elapsed >= 190 && elapsed < 3_000, `took ${elapsed} ms`);
  });

  test("the deadline covers reading the body, and a per-call timeout overrides the client's", async () => {
    proxy.plan = ["stall-body"];
    const error = await failure(client({ timeout: 60_000, retries: 0 }).rooms({ timeout: 200 }));
    assert.deepEqual([error.code, error.status], ["timeout", 0]);
  });

  test("timeout 0 means no deadline", async () => {
    proxy.plan = ["forward"];
    assert.ok(Array.isArray((await client({ timeout: 0 }).rooms()).rooms));
  });
});

describe("abort", () => {
  test("the caller's signal aborts a pending call with code aborted and its reason as cause", async () => {
    proxy.plan = ["stall"];
    const controller = new AbortController();
    const call = client().emit("x", 1, { signal: controller.signal });
    setTimeout(() => controller.abort(new Error("user went away")), 100);
    const error = await failure(call);
    assert.deepEqual([error.code, error.status], ["aborted", 0]);
    assert.equal(error.cause.message, "user went away");
  });

  test("an already aborted signal sends nothing", async () => {
    const error = await failure(client().rooms({ signal: AbortSignal.abort() }));
    assert.equal(error.code, "aborted");
    assert.deepEqual(proxy.seen, []);
  });

  test("aborting during the backoff between retries stops them", async () => {
    proxy.plan = ["status:503", "status:503", "status:503"];
    const controller = new AbortController();
    const call = client({ retries: 2 }).rooms({ signal: controller.signal });
    // The first attempt fails at once; the abort lands in the wait before the
    // second (or, on a slow machine, still in the first attempt).
    setTimeout(() => controller.abort(), 20);
    const error = await failure(call);
    assert.equal(error.code, "aborted");
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.ok(proxy.seen.length <= 1, proxy.seen.join(", "));
  });
});

describe("retries", () => {
  test("GETs are retried after a reset, a timeout and a 503, then answered by the gateway", async (t) => {
    const room = uid("retry");
    const a = await connectAs(t, uid("u"), { rooms: [room] });
    proxy.plan = ["reset", "stall", "status:503", "forward"];
    // The timeout must fire on "stall" yet leave "forward" time on a loaded machine.
    const listing = await client({ retries: 3, timeout: 1_000 }).sockets(room);
    assert.deepEqual(
      members(listing).map((s) => s.id),
      [a.id],
    );
    assert.equal(proxy.seen.length, 4);
    assert.ok(proxy.seen.every((line) => line.startsWith(`GET /v1/rooms/${room}/sockets `)));
  });

  test("the last failure is reported once the retries are spent", async () => {
    proxy.plan = ["status:503", "status:503", "html"];
    const error = await failure(client({ retries: 2 }).rooms());
    assert.deepEqual([error.code, error.status], ["unexpected_response", 502]);
    assert.equal(proxy.seen.length, 3);
  });

  test("retries 0 makes one attempt", async () => {
    proxy.plan = ["status:503"];
    const error = await failure(client({ retries: 0 }).rooms());
    assert.deepEqual([error.code, error.status], ["unexpected_response", 503]);
    assert.equal(proxy.seen.length, 1);
  });

  test("POSTs are retried under one idempotency key, and applied once", async (t) => {
    const a = await connectAs(t, uid("u"));
    const sdk = client({ retries: 4, timeout: 1_000 });
    proxy.plan = ["reset", "stall", "status:503", "forward-lose", "forward"];
    await sdk.emit("once", 1, { rooms: [a.id] });
    assert.equal(proxy.seen.length, 5, proxy.seen.join(", "));
    // One key for the call, on every attempt (the first included), a UUID by default.
    assert.equal(new Set(proxy.keys).size, 1);
    assert.match(proxy.keys[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    await sdk.emit("sentinel", null, { rooms: [a.id] });
    await a.next("sentinel");
    // The attempt whose answer was lost was applied; the last one was replayed.
    assert.deepEqual(a.names(), ["once", "sentinel"]);
    assert.notEqual(proxy.keys[5], proxy.keys[0]); // a new call, a new key
  });

  test("every POST sends a key; a caller's own key is used as given", async (t) => {
    const a = await connectAs(t, uid("u"));
    const sdk = client({ retries: 1 });
    const own = uid("order-42:shipped");
    proxy.plan = ["status:503", "forward"];
    await sdk.join({ room: uid("r"), sockets: [a.id] }, { idempotencyKey: own });
    assert.deepEqual(proxy.keys, [own, own]);
    proxy.keys = [];
    await sdk.batch([{ event: "x", rooms: [a.id] }]);
    await sdk.leave({ room: "r", sockets: [a.id] });
    await sdk.disconnect({ sockets: ["nobody"] });
    await sdk.emit({ event: "x", rooms: [a.id] }, { idempotencyKey: uid("k") });
    await sdk.rooms();
    assert.equal(new Set(proxy.keys.slice(0, 4)).size, 4);
    assert.equal(proxy.keys[4], undefined); // GETs carry none
    for (const bad of ["", "x".repeat(257), "é", "a\nb"]) {
      await assert.rejects(sdk.emit("x", 1, { idempotencyKey: bad }), TypeError);
    }
  });

  test("a POST with retries 0 makes one attempt", async () => {
    proxy.plan = ["status:503", "forward"];
    await failure(client({ retries: 0 }).emit("x", 1));
    assert.equal(proxy.seen.length, 1);
  });

  test("a 500 (a gateway bug) and a 4xx are final at once", async () => {
    for (const step of ["status:500", "status:429", "status:404"]) {
      proxy.plan = [step, "forward"];
      proxy.seen = [];
      const error = await failure(client({ retries: 2 }).rooms());
      assert.equal(error.status, Number(step.slice("status:".length)));
      assert.equal(proxy.seen.length, 1, step);
    }
  });

  test("redirects are not followed", async () => {
    proxy.plan = ["redirect"];
    const error = await failure(client().emit("x", 1));
    assert.deepEqual([error.code, error.status], ["unexpected_response", 307]);
    // A 3xx is not retried, POST or not.
    assert.equal(proxy.seen.length, 1);
  });

  test("a 2xx answer that is not the API's body is unexpected_response", async () => {
    const sdk = new Siogate({
      url: proxy.url,
      apiKey: API_KEY,
      fetch: async () => new Response("<html>captive portal</html>", { status: 200 }),
    });
    const error = await failure(sdk.rooms());
    assert.deepEqual([error.code, error.status], ["unexpected_response", 200]);
  });
});

describe("fetch option", () => {
  test("a custom fetch sees every request, with the key as a bearer token and JSON bodies", async (t) => {
    const a = await connectAs(t, uid("u"));
    const requests = [];
    const sdk = new Siogate({
      url: GATEWAY_URL,
      apiKey: API_KEY,
      fetch: (url, init) => {
        requests.push({ url, method: init.method, headers: init.headers, body: init.body });
        return fetch(url, init);
      },
    });
    await sdk.emit("hello", { text: "hi" }, { rooms: [a.id], except: ["user:nobody"], namespace: "/" });
    assert.deepEqual(await a.next("hello"), [{ text: "hi" }]);
    assert.deepEqual(requests, [
      {
        url: `${GATEWAY_URL}/v1/emit`,
        method: "POST",
        headers: {
          accept: "application/json",
          authorization: `Bearer ${API_KEY}`,
          "content-type": "application/json",
          "idempotency-key": requests[0].headers["idempotency-key"],
        },
        body: JSON.stringify({ event: "hello", data: { text: "hi" }, namespace: "/", rooms: [a.id], except: ["user:nobody"] }),
      },
    ]);
  });
});
