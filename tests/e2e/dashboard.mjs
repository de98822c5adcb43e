// Drives siogate's built-in dashboard (GET /dashboard) in a real Chromium for
// test_dashboard_browser.py.
//
// One JSON request per line on stdin, one JSON reply per line on stdout:
//   {"id": 1, "op": "open", ...}  ->  {"id": 1, "ok": true, "result": {...}}
//                                 or  {"id": 1, "ok": false, "error": "..."}
// The Python test keeps the assertions; this script only acts on the page and reports
// what it saw. Every wait is bounded by the request's `timeoutMs`.

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
const requests = [];

const ops = {
  /** Open the page, answering the login prompt with `username` / `password`. */
  async open({ executablePath, url, username, password, timeoutMs }) {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: timeoutMs,
    });
    const context = await browser.newContext({
      viewport: { width: 1200, height: 1000 },
      httpCredentials: { username, password },
    });
    page = await context.newPage();
    page.setDefaultTimeout(timeoutMs);
    page.on("pageerror", (err) => pageErrors.push(`pageerror: ${err.message}`));
    // CSP violations and failed loads are console errors too.
    page.on("console", (msg) => {
      if (msg.type() === "error") pageErrors.push(`console: ${msg.text()}`);
    });
    page.on("request", async (req) => {
      const headers = await req.allHeaders();
      requests.push({ url: req.url(), authorization: headers.authorization ?? null });
    });
    const response = await page.goto(url, { timeout: timeoutMs });
    return { version: browser.version(), status: response.status() };
  },

  /** Wait until the cards say `sockets` and the sockets chart has a line; report. */
  async shows({ sockets, timeoutMs }) {
    await page.waitForFunction(
      (want) => {
        const line = document.querySelector("#chart-sockets polyline");
        return (
          document.getElementById("sockets").textContent === want &&
          document.getElementById("status").dataset.state === "live" &&
          line !== null &&
          line.getAttribute("points").trim().split(/\s+/).length >= 2
        );
      },
      String(sockets),
      { timeout: timeoutMs },
    );
    return page.evaluate(() => {
      const text = (id) => document.getElementById(id).textContent;
      const charts = {};
      for (const svg of document.querySelectorAll("svg[id^=chart-]")) {
        charts[svg.id] = [...svg.querySelectorAll("polyline")].map((line) => ({
          series: line.dataset.series,
          // y grows downwards: larger values are smaller y.
          points: line
            .getAttribute("points")
            .trim()
            .split(/\s+/)
            .map((p) => p.split(",").map(Number)),
        }));
      }
      const rows = [...document.querySelectorAll("#node-table tbody tr")].map((tr) =>
        [...tr.cells].map((td) => td.textContent),
      );
      return { sockets: text("sockets"), nodes: text("nodes"), status: text("status"), charts, rows };
    });
  },

  /** Wait until the webhook latency chart shows something (a line, or a dot for a lone
   * sample); report what and the latency card. */
  async latency({ timeoutMs }) {
    const marks = "#chart-latency polyline, #chart-latency circle";
    await page.waitForFunction((sel) => document.querySelector(sel) !== null, marks, {
      timeout: timeoutMs,
    });
    return page.evaluate((sel) => ({
      card: document.getElementById("hook-ms").textContent,
      series: [...document.querySelectorAll(sel)].map((mark) => mark.dataset.series),
    }), marks);
  },

  async requests() {
    return { requests };
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
