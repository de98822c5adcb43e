// Drives a real Chromium through the Next.js example for test_nextjs_browser.py.
//
// One JSON request per line on stdin, one JSON reply per line on stdout:
//   {"id": 1, "op": "open", ...}  ->  {"id": 1, "ok": true, "result": {...}}
//                                 or  {"id": 1, "ok": false, "error": "..."}
// The Python test keeps the assertions; this script only acts on the page and
// reports what it saw. Every wait is bounded by the request's `timeoutMs`.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

// Flags for a headless browser that talks to nothing but the loopback servers
// under test (no update checks, no first-run pages, no GPU on a CI machine).
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
];

let browser;
let page;
const pageErrors = [];
let tokenRequests = 0;

const ops = {
  async open({ executablePath, url, timeoutMs }) {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: timeoutMs,
    });
    page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    page.setDefaultTimeout(timeoutMs);
    page.on("pageerror", (err) => pageErrors.push(`pageerror: ${err.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error") pageErrors.push(`console: ${msg.text()}`);
    });
    page.on("request", (req) => {
      if (new URL(req.url()).pathname === "/api/token") tokenRequests += 1;
    });
    await page.goto(url, { timeout: timeoutMs });
    return { version: browser.version() };
  },

  /** Wait until the status pill shows `status`; report the connection counters. */
  async status({ status, minConnects = 0, timeoutMs }) {
    await page.waitForFunction(
      ([want, min]) => {
        const pill = document.querySelector('[data-testid="status"]');
        const connects = Number(document.querySelector('[data-testid="connects"]')?.textContent);
        return pill?.getAttribute("data-status") === want && connects >= min;
      },
      [status, minConnects],
      { timeout: timeoutMs },
    );
    return {
      user: await page.getByTestId("user").textContent(),
      connects: Number(await page.getByTestId("connects").textContent()),
      tokenRequests,
    };
  },

  /**
   * Click "Publish"; return the API route's reply and the JSON the socket received.
   * With `expectError`, return the route's status and the error the page shows.
   */
  async publish({ timeoutMs, expectError = false }) {
    const replied = page.waitForResponse(
      (r) => new URL(r.url()).pathname === "/api/publish" && r.request().method() === "POST",
      { timeout: timeoutMs },
    );
    await page.getByTestId("publish").click();
    const response = await replied;
    const reply = await response.json();
    if (expectError) {
      const shown = page.getByTestId("publish-error");
      await shown.waitFor({ timeout: timeoutMs });
      return { status: response.status(), reply, shown: await shown.textContent() };
    }
    if (!response.ok() || !reply.sent) {
      throw new Error(`/api/publish answered ${response.status()}: ${JSON.stringify(reply)}`);
    }
    const result = page.locator(
      `[data-testid="publish-result"][data-id="${reply.sent.id}"][data-received="true"]`,
    );
    await result.waitFor({ timeout: timeoutMs });
    return {
      sent: reply.sent,
      receivedJson: await result.getByTestId("received-json").textContent(),
      summary: await result.locator("p").first().textContent(),
    };
  },

  /** Type `text` into the chat box, send it, and wait for its ack (or its failure). */
  async chat({ text, timeoutMs }) {
    const entries = page.getByTestId("chat-entry");
    const before = await entries.count();
    await page.getByTestId("chat-input").fill(text);
    await page.getByTestId("chat-send").click();
    await page.waitForFunction(
      (index) => {
        const entry = document.querySelectorAll('[data-testid="chat-entry"]')[index];
        return entry !== undefined && entry.getAttribute("data-state") !== "pending";
      },
      before,
      { timeout: timeoutMs },
    );
    const entry = entries.nth(before);
    return {
      text: await entry.locator(".chat-text").textContent(),
      state: await entry.getAttribute("data-state"),
      ackJson: await entry.getByTestId("ack-json").textContent(),
    };
  },

  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return { path };
  },

  async errors() {
    return { errors: pageErrors };
  },

  async close() {
    await browser?.close();
    browser = undefined;
    return {};
  },
};

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { id, op, ...args } = JSON.parse(line);
  try {
    if (!(op in ops)) throw new Error(`unknown op ${op}`);
    reply({ id, ok: true, result: await ops[op](args) });
  } catch (err) {
    reply({ id, ok: false, error: String(err?.stack ?? err) });
  }
}
// stdin closed: the test is done (or gone); never leave a browser behind.
await browser?.close();
