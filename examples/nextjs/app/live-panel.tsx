"use client";

// The browser side: this component holds the one Socket.IO connection to the
// gateway. It never sees the API key or the secrets; it only asks /api/token
// for a short-lived token, before every (re)connect.

import { useEffect, useRef, useState, type FormEvent } from "react";
import { io, type Socket } from "socket.io-client";

type Status = "connecting" | "connected" | "disconnected";

interface TokenReply {
  token: string;
  url: string;
  user: string;
}

interface Publish {
  id: string;
  sent?: unknown;
  received?: unknown;
  receivedAt?: string;
  error?: string;
}

interface ChatEntry {
  key: number;
  text: string;
  state: "pending" | "acked" | "error";
  ack?: unknown;
}

const ACK_TIMEOUT_MS = 10_000;
const RETRY_REFUSED_MS = 2_000;

async function fetchToken(): Promise<TokenReply> {
  const res = await fetch("/api/token", { cache: "no-store" });
  if (!res.ok) throw new Error(`/api/token answered ${res.status}`);
  return (await res.json()) as TokenReply;
}

export default function LivePanel() {
  const socketRef = useRef<Socket | null>(null);
  const [status, setStatus] = useState<Status>("connecting");
  const [user, setUser] = useState<string>();
  const [gateway, setGateway] = useState<string>();
  const [socketId, setSocketId] = useState<string>();
  const [connects, setConnects] = useState(0);
  const [lastError, setLastError] = useState<string>();
  const [publish, setPublish] = useState<Publish>();
  const [publishing, setPublishing] = useState(false);
  const [chat, setChat] = useState<ChatEntry[]>([]);
  const [draft, setDraft] = useState("");
  const chatKey = useRef(0);

  useEffect(() => {
    let socket: Socket | undefined;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;

    fetchToken().then(
      (first) => {
        if (stopped) return;
        setUser(first.user);
        setGateway(first.url);
        let initialToken: string | undefined = first.token;
        socket = io(first.url, {
          // Called before every connection attempt: the first one reuses the
          // token fetched above, reconnects fetch a fresh one.
          auth: (cb) => {
            if (initialToken) {
              cb({ token: initialToken });
              initialToken = undefined;
              return;
            }
            fetchToken().then(
              (reply) => cb({ token: reply.token }),
              () => cb({}),
            );
          },
        });
        socketRef.current = socket;

        socket.on("connect", () => {
          setStatus("connected");
          setSocketId(socket?.id);
          setConnects((n) => n + 1);
          setLastError(undefined);
        });
        socket.on("disconnect", (reason) => {
          setStatus("disconnected");
          setSocketId(undefined);
          setLastError(`disconnected: ${reason}`);
        });
        socket.on("connect_error", (err) => {
          setStatus("disconnected");
          setLastError(err.message);
          // While `active`, socket.io-client retries by itself (gateway down).
          // A refusal from the gateway (bad token) is final for the client:
          // retry after a pause, with a fresh token.
          if (!socket?.active) {
            retry = setTimeout(() => socket?.connect(), RETRY_REFUSED_MS);
          }
        });
        socket.on("demo:payload", (data: { id: string }) => {
          const receivedAt = new Date().toLocaleTimeString();
          setPublish((p) =>
            p?.id === data.id
              ? { ...p, received: data, receivedAt }
              : { id: data.id, received: data, receivedAt },
          );
        });
      },
      (err: Error) => {
        setStatus("disconnected");
        setLastError(err.message);
      },
    );

    return () => {
      stopped = true;
      clearTimeout(retry);
      socket?.disconnect();
      socketRef.current = null;
    };
  }, []);

  async function onPublish() {
    setPublishing(true);
    try {
      const res = await fetch("/api/publish", { method: "POST" });
      const body = (await res.json()) as { sent?: { id: string }; error?: string };
      if (!res.ok || !body.sent) {
        setPublish({ id: "", error: body.error ?? `/api/publish answered ${res.status}` });
        return;
      }
      const sent = body.sent;
      // The event may arrive before this response does: merge on the id.
      setPublish((p) => (p?.id === sent.id ? { ...p, sent } : { id: sent.id, sent }));
    } catch (err) {
      setPublish({ id: "", error: (err as Error).message });
    } finally {
      setPublishing(false);
    }
  }

  function onSend(event: FormEvent) {
    event.preventDefault();
    const socket = socketRef.current;
    const text = draft.trim();
    if (!socket || text === "") return;
    const key = ++chatKey.current;
    setChat((entries) => [...entries, { key, text, state: "pending" }]);
    setDraft("");
    const settle = (state: ChatEntry["state"], ack: unknown) =>
      setChat((entries) => entries.map((e) => (e.key === key ? { ...e, state, ack } : e)));
    socket.timeout(ACK_TIMEOUT_MS).emit("chat", { text }, (err: Error | null, ack: unknown) => {
      if (err) settle("error", { error: "no ack within 10 s" });
      else settle(isError(ack) ? "error" : "acked", ack);
    });
  }

  return (
    <main>
      <header>
        <h1>siogate + Next.js</h1>
        <p>
          The browser holds the socket. API routes talk plain HTTP to the gateway: they publish
          with the SDK and answer the gateway&apos;s signed webhooks.
        </p>
      </header>

      <section className="card">
        <h2>Connection</h2>
        <dl>
          <dt>Status</dt>
          <dd>
            <span className={`pill ${status}`} data-testid="status" data-status={status}>
              {status}
            </span>
          </dd>
          <dt>User</dt>
          <dd data-testid="user">{user ?? "…"}</dd>
          <dt>Gateway</dt>
          <dd>{gateway ?? "…"}</dd>
          <dt>Socket id</dt>
          <dd>
            <code>{socketId ?? "—"}</code>
          </dd>
          <dt>Connections</dt>
          <dd data-testid="connects">{connects}</dd>
          {lastError && (
            <>
              <dt>Last error</dt>
              <dd className="muted">{lastError}</dd>
            </>
          )}
        </dl>
      </section>

      <section className="card">
        <h2>Publish from an API route</h2>
        <p className="muted">
          <code>POST /api/publish</code> sends a nested object with arrays, non-ASCII text and a
          string of a few hundred KB through <code>siogate.emit()</code>; your socket receives it.
        </p>
        <button type="button" onClick={onPublish} disabled={publishing} data-testid="publish">
          {publishing ? "Publishing…" : "Publish a big object"}
        </button>
        {publish && <PublishResult publish={publish} />}
      </section>

      <section className="card">
        <h2>Chat with an ack</h2>
        <p className="muted">
          Your socket emits <code>chat</code>; the gateway POSTs it to{" "}
          <code>/api/siogate/webhook</code>, which checks the signature and replies; the reply is
          your ack.
        </p>
        <form onSubmit={onSend} className="chat-form">
          <input
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            placeholder="Say something"
            maxLength={500}
            data-testid="chat-input"
          />
          <button type="submit" disabled={status !== "connected"} data-testid="chat-send">
            Send
          </button>
        </form>
        <ul className="chat">
          {chat.map((entry) => (
            <li key={entry.key} data-testid="chat-entry" data-state={entry.state}>
              <span className="chat-text">{entry.text}</span>
              <span className={`pill ${entry.state}`}>{entry.state}</span>
              {entry.ack !== undefined && (
                <pre data-testid="ack-json">{JSON.stringify(entry.ack)}</pre>
              )}
            </li>
          ))}
        </ul>
      </section>
    </main>
  );
}

function PublishResult({ publish }: { publish: Publish }) {
  if (publish.error) {
    return (
      <p className="error" data-testid="publish-error">
        {publish.error}
      </p>
    );
  }
  const sentJson = publish.sent === undefined ? undefined : JSON.stringify(publish.sent);
  const receivedJson =
    publish.received === undefined ? undefined : JSON.stringify(publish.received);
  const identical = sentJson !== undefined && sentJson === receivedJson;
  return (
    <div
      className="result"
      data-testid="publish-result"
      data-id={publish.id}
      data-received={receivedJson !== undefined}
    >
      {receivedJson === undefined ? (
        <p>Sent; waiting for it to arrive…</p>
      ) : (
        <>
          <p>
            Arrived at {publish.receivedAt}: {countProperties(publish.received)} properties,{" "}
            {new TextEncoder().encode(receivedJson).length.toLocaleString("en")} bytes of JSON.{" "}
            {sentJson === undefined ? (
              ""
            ) : identical ? (
              <strong className="ok">Identical to what the API route sent.</strong>
            ) : (
              <strong className="error">Differs from what the API route sent!</strong>
            )}
          </p>
          <pre className="preview">{JSON.stringify(publish.received, shortenStrings, 2)}</pre>
          <details>
            <summary>Raw JSON as received</summary>
            <pre data-testid="received-json">{receivedJson}</pre>
          </details>
        </>
      )}
    </div>
  );
}

/** Properties of all objects, at every depth. */
function countProperties(value: unknown): number {
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + countProperties(v), 0);
  if (value !== null && typeof value === "object") {
    return Object.values(value).reduce((n: number, v) => n + 1 + countProperties(v), 0);
  }
  return 0;
}

/** JSON.stringify replacer for the preview: long strings are cut, with their length. */
function shortenStrings(_key: string, value: unknown): unknown {
  if (typeof value === "string" && value.length > 60) {
    const head = Array.from(value.slice(0, 61)).slice(0, 60).join("");
    return `${head}… (${value.length.toLocaleString("en")} characters)`;
  }
  return value;
}

function isError(ack: unknown): boolean {
  return (
    typeof ack === "object" &&
    ack !== null &&
    ("error" in ack || (ack as { ok?: unknown }).ok === false)
  );
}
