// POST /api/siogate/webhook: the gateway forwards every client event here
// (SIOGATE_WEBHOOK_URL). For an event, the `ack` list of the reply becomes the
// arguments of the client's ack callback.

import { SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookVerificationError, verifyWebhook } from "siogate";
import { webhookSecret } from "@/lib/siogate";

export const dynamic = "force-dynamic";

const MAX_CHAT_LENGTH = 500;

interface WebhookBody {
  type: "connect" | "event" | "disconnect";
  namespace: string;
  socket: { id: string; user: string | null };
  event?: string;
  args?: unknown[];
  reason?: string;
}

export async function POST(request: Request) {
  // The signature covers the timestamp and the exact bytes: read them before
  // parsing anything. A timestamp over 300 s old (a replay) is refused too.
  const raw = new Uint8Array(await request.arrayBuffer());
  try {
    await verifyWebhook(
      raw,
      request.headers.get(SIGNATURE_HEADER),
      request.headers.get(TIMESTAMP_HEADER),
      webhookSecret(),
    );
  } catch (error) {
    if (error instanceof WebhookVerificationError) {
      return Response.json({ error: error.code }, { status: 401 });
    }
    throw error;
  }
  const body = JSON.parse(new TextDecoder().decode(raw)) as WebhookBody;

  // Connects and disconnects are notifications; nobody waits for the reply.
  if (body.type !== "event" || body.event !== "chat") {
    return Response.json({});
  }

  const text = (body.args?.[0] as { text?: unknown } | undefined)?.text;
  if (typeof text !== "string" || text.trim() === "" || text.length > MAX_CHAT_LENGTH) {
    return Response.json({
      ack: [{ ok: false, error: `text must be 1-${MAX_CHAT_LENGTH} characters` }],
    });
  }
  return Response.json({
    ack: [
      {
        ok: true,
        echo: text,
        user: body.socket.user,
        socket: body.socket.id,
        receivedAt: new Date().toISOString(),
      },
    ],
  });
}
