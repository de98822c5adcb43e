// Drives @socket.io/admin-ui (the build shipped in its npm package) in a real Chromium
// for test_admin_ui_browser.py.
//
// One JSON request per line on stdin, one JSON reply per line on stdout:
//   {"id": 1, "op": "open", ...}  ->  {"id": 1, "ok": true, "result": {...}}
//                                 or  {"id": 1, "ok": false, "error": "..."}
// The Python test keeps the assertions; this script only acts on the page and reports
// what it saw. Every wait is bounded by the request's `timeoutMs`.
//
// The UI's page links web fonts and icons from googleapis.com and jsdelivr.net; those
// requests are aborted (the test talks to loopback only), so icons render blank and
// buttons are found by their icon class.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

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

// The table row whose first cell is `key` (a socket id, a room name).
function row(key) {
  return page.locator("tbody tr").filter({ has: page.locator("td").first().getByText(key, { exact: true }) });
}

async function goTo(section, timeoutMs) {
  await page.locator("nav").getByText(section, { exact: true }).click({ timeout: timeoutMs });
  // The current page's breadcrumb (during a page transition both pages are there).
  await page
    .locator(".v-breadcrumbs__item--disabled")
    .getByText(section, { exact: true })
    .first()
    .waitFor({ timeout: timeoutMs });
}

const ops = {
  async open({ executablePath, url, timeoutMs }) {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: timeoutMs,
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    page.setDefaultTimeout(timeoutMs);
    await page.route("**/*", (route) => {
      const host = new URL(route.request().url()).hostname;
      return host === "127.0.0.1" ? route.continue() : route.abort();
    });
    page.on("pageerror", (err) => pageErrors.push(`pageerror: ${err.message}`));
    page.on("console", (msg) => {
      // The aborted font and icon requests log "Failed to load resource".
      if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) {
        pageErrors.push(`console: ${msg.text()}`);
      }
    });
    await page.goto(url, { timeout: timeoutMs });
    return { version: browser.version() };
  },

  /** Fill the connection form; wait until the header says CONNECTED. */
  async login({ serverUrl, username, password, timeoutMs }) {
    await page.getByLabel("Server URL").fill(serverUrl);
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Connect" }).click();
    const header = page.locator("header");
    // The status chip says "connected" (upper-cased by CSS).
    const connected = header.getByText(/^connected$/i).first();
    const error = page.locator(".v-dialog .red--text, .v-dialog .error--text");
    await connected.or(error).first().waitFor({ timeout: timeoutMs });
    if (await connected.isVisible()) return { connected: true };
    return { connected: false, error: await error.first().innerText() };
  },

  /** The Sockets page: wait until the row of socket `sid` is there (or gone). */
  async socket({ sid, present = true, timeoutMs }) {
    await goTo("Sockets", timeoutMs);
    await row(sid).first().waitFor({ state: present ? "visible" : "detached", timeout: timeoutMs });
    const cells = present ? await row(sid).first().locator("td").allInnerTexts() : [];
    return { cells };
  },

  /** The Rooms page: wait until room `name` is listed (or gone); its row's text. */
  async room({ name, present = true, timeoutMs }) {
    await goTo("Rooms", timeoutMs);
    await row(name).first().waitFor({ state: present ? "visible" : "detached", timeout: timeoutMs });
    const cells = present ? await row(name).first().locator("td").allInnerTexts() : [];
    return { cells };
  },

  /** The Servers page: the texts of the healthy servers' rows, once `count` are listed. */
  async servers({ count, timeoutMs }) {
    await goTo("Servers", timeoutMs);
    const healthy = () =>
      [...document.querySelectorAll("tbody tr")]
        .map((tr) => tr.innerText)
        .filter((text) => /healthy/i.test(text) && !/unhealthy/i.test(text));
    await page.waitForFunction(`(${healthy})().length >= ${Number(count)}`, null, {
      timeout: timeoutMs,
    });
    return { rows: await page.evaluate(`(${healthy})()`) };
  },

  /** Click the disconnect (logout icon) button in the row of socket `sid`. */
  async disconnect({ sid, timeoutMs }) {
    await goTo("Sockets", timeoutMs);
    await row(sid).first().locator("button:has(.mdi-logout)").click({ timeout: timeoutMs });
    return {};
  },

  async screenshot({ path }) {
    await page.screenshot({ path, fullPage: true });
    return { path };
  },

  async errors() {
    return { errors: pageErrors };
  },

  async close() {
    if (browser) await browser.close();
    browser = undefined;
    return {};
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  let reply;
  try {
    const op = ops[request.op];
    if (!op) throw new Error(`unknown op ${request.op}`);
    reply = { id: request.id, ok: true, result: await op(request) };
  } catch (err) {
    reply = { id: request.id, ok: false, error: String(err?.stack || err) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
  if (request.op === "close") break;
}
if (browser) await browser.close();
