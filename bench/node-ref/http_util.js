// HTTP helpers shared by the Node reference servers (server.js, ack_server.js).
"use strict";

const crypto = require("node:crypto");

// Constant-time API key check: compare fixed-length digests so lengths do not leak either.
function bearerCheck(apiKey) {
  const apiKeyDigest = crypto.createHash("sha256").update(apiKey).digest();
  return function authorized(req) {
    const header = req.headers.authorization || "";
    if (!header.startsWith("Bearer ")) return false;
    const given = crypto.createHash("sha256").update(header.slice(7)).digest();
    return crypto.timingSafeEqual(given, apiKeyDigest);
  };
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

module.exports = { bearerCheck, sendJson };
