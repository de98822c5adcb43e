// GET /api/token: a short-lived handshake token for the browser's socket.
//
// The page's socket calls this before every (re)connect, so a token only has to
// outlive the handshake; an open socket stays open after the token expires.

import { cookies } from "next/headers";
import { signToken } from "siogate";
import { DEMO_ROOM, jwtSecret, publicGatewayUrl } from "@/lib/siogate";

export const dynamic = "force-dynamic";

const USER_COOKIE = "demo-user";
const TOKEN_TTL_SECONDS = 10 * 60;

export async function GET() {
  // Stands in for your own authentication: every browser gets a guest name.
  const jar = await cookies();
  let user = jar.get(USER_COOKIE)?.value;
  if (!user) {
    user = `guest-${crypto.randomUUID().slice(0, 8)}`;
    jar.set(USER_COOKIE, user, { httpOnly: true, sameSite: "lax", path: "/" });
  }
  const token = await signToken(
    { sub: user, rooms: [DEMO_ROOM], ttl: TOKEN_TTL_SECONDS },
    jwtSecret(),
  );
  return Response.json(
    { token, url: publicGatewayUrl(), user },
    { headers: { "Cache-Control": "no-store" } },
  );
}
