// POST /api/publish: push a large, deeply nested object to every page in the
// demo room. The API route never opens a socket: it makes one HTTP call to the
// gateway, and the browsers' own sockets deliver the event.

import { SiogateError } from "siogate";
import { samplePayload } from "@/lib/sample-payload";
import { DEMO_ROOM, siogate } from "@/lib/siogate";

export const dynamic = "force-dynamic";

export async function POST() {
  const payload = samplePayload(crypto.randomUUID());
  try {
    await siogate().emit("demo:payload", payload, { rooms: [DEMO_ROOM] });
  } catch (err) {
    // SiogateError: the gateway answered with an error (`code` is its error code),
    // or did not answer (`network_error`, `timeout`).
    if (err instanceof SiogateError) {
      return Response.json({ error: `siogate ${err.code}: ${err.message}` }, { status: 502 });
    }
    throw err;
  }
  // The page compares this copy with what its socket received.
  return Response.json({ sent: payload }, { headers: { "Cache-Control": "no-store" } });
}
