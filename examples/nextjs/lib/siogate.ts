// Server-side settings and the SDK client. Only API routes import this file:
// the API key and the secrets never reach the browser.

import { Siogate } from "siogate";

/** The room every demo socket joins (through its token's `rooms` claim). */
export const DEMO_ROOM = "demo";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: copy .env.example to .env.local (see README.md)`);
  }
  return value;
}

/** Where this server reaches the gateway's HTTP API. */
export function gatewayUrl(): string {
  return process.env.SIOGATE_URL ?? "http://127.0.0.1:8000";
}

/** Where the browser reaches the gateway (differs behind a proxy or in Docker). */
export function publicGatewayUrl(): string {
  return process.env.SIOGATE_PUBLIC_URL ?? gatewayUrl();
}

export const jwtSecret = () => required("SIOGATE_JWT_SECRET");
export const webhookSecret = () => required("SIOGATE_WEBHOOK_SECRET");

let client: Siogate | undefined;

/** One SDK client per server process: it is a thin wrapper around fetch. */
export function siogate(): Siogate {
  client ??= new Siogate({ url: gatewayUrl(), apiKey: required("SIOGATE_API_KEY") });
  return client;
}
