// graphql-ws 6 (`createClient`, protocol graphql-transport-ws) unmodified, on Node with `ws`,
// against a real `datadiver-graph serve`: both connectionParams styles, the four live
// subscriptions (snapshot first, then every change from mutations and signed Clerk webhooks,
// in version order), a refused login (4403) and a reconnection across a SIGTERM restart.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { Inbox, devToken, sleep, startServer, webhook } from "./support.mjs";

const USER = "user_gw_ada";
let server;
let token;
const clients = [];

before(async () => {
  server = await startServer();
  await webhook(server, "user.created", ["--user", USER, "--first-name", "Ada", "--last-name", "Lovelace"]);
  token = await devToken(server, USER);
});

after(async () => {
  await Promise.allSettled(clients.map((client) => client.dispose()));
  await server?.stop();
});

// ---- the client, as the README shows it (graphql-ws 6.4, Node 20, `ws` 8) ----------------
/** `connectionParams`: `{ Authorization: "Bearer <jwt>" }`, `{ authToken: "<jwt>" }` or a
 * function returning either (Clerk: `async () => ({ authToken: await getToken() })`). */
function connect(connectionParams, on = {}) {
  const client = createClient({
    url: server.wsUrl, // wss://api.example.com/graphql
    webSocketImpl: WebSocket, // browsers: leave out
    connectionParams,
    // Up to 10 attempts, 0.5–1, 1–2, 2–4, then 2.5–5 s apart (25–47 s in all): a restart takes
    // a few seconds. Jittered, so that every client does not come back at the same instant.
    // (graphql-ws's default: 5 attempts, 2^n s + 0.3–3 s apart, the last after ~16 s.)
    retryAttempts: 10,
    retryWait: (retries) => new Promise((resolve) =>
      setTimeout(resolve, Math.min(1000 * 2 ** retries, 5000) * (0.5 + Math.random() / 2))),
    // graphql-ws retries only close events by default: while a restarting server refuses
    // connections, `ws` reports an error event first, and the client would give up. Retry
    // those too, but not a refused login (4403).
    shouldRetry: (event) => event?.code !== 4403,
    on,
  });
  clients.push(client);
  return client;
}

/** A query or mutation over the same socket (graphql-ws's own `execute` recipe). */
function execute(client, query, variables = {}) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe({ query, variables }, {
      next: (value) => { result = value; },
      error: reject,
      complete: () => (result?.errors ? reject(new Error(JSON.stringify(result.errors))) : resolve(result.data)),
    });
  });
}
// ---------------------------------------------------------------------------------------------

const CURRENT_USER = "subscription { currentUser { externalId name preferences version } }";
const SESSION = `subscription($id: String!) {
  session(sessionId: $id) { sessionId userId active metadata lastActivity endedAt version } }`;
const USER_SESSIONS = "subscription { userSessions { sessionId active metadata version } }";
const LATEST_PAYMENT = "subscription { latestPayment { paymentId userId status amount version } }";

function subscribe(client, query, variables = {}, name = query) {
  const inbox = new Inbox(name);
  client.subscribe({ query, variables }, inbox.sink);
  return inbox;
}

/** Nothing more arrived: each change came exactly once. */
async function drained(...inboxes) {
  await sleep(300);
  for (const inbox of inboxes) {
    assert.deepEqual(inbox.items, [], `${inbox.name}: unexpected extra messages`);
  }
}

test("connectionParams { authToken }, { Authorization: 'Bearer …' } and an async function all sign in", async () => {
  const variants = {
    authToken: { authToken: token },
    Authorization: { Authorization: `Bearer ${token}` },
    "async function": async () => ({ Authorization: `Bearer ${token}` }),
  };
  for (const [name, params] of Object.entries(variants)) {
    const acks = [];
    const client = connect(params, { connected: (_socket, payload) => acks.push(payload) });
    const user = subscribe(client, CURRENT_USER, {}, `currentUser via ${name}`);
    const { data } = await user.value();
    assert.equal(data.currentUser.externalId, USER);
    assert.equal(data.currentUser.name, "Ada Lovelace");
    assert.equal(acks.length, 1);
    await client.dispose();
  }
});

test("session, userSessions, currentUser, latestPayment: the snapshot, then each change in order", async () => {
  const live = connect({ authToken: token });
  const writer = connect({ Authorization: `Bearer ${token}` });

  // Snapshots first.
  const list = subscribe(live, USER_SESSIONS, {}, "userSessions");
  const me = subscribe(live, CURRENT_USER, {}, "currentUser");
  const payment = subscribe(live, LATEST_PAYMENT, {}, "latestPayment");
  assert.deepEqual((await list.value()).data, { userSessions: [] });
  const meFirst = (await me.value()).data.currentUser;
  assert.deepEqual(meFirst, { externalId: USER, name: "Ada Lovelace", preferences: {}, version: meFirst.version });
  assert.deepEqual((await payment.value()).data, { latestPayment: null });

  // Sessions: created, then four changes sent back to back over the writer's socket.
  const created = (await execute(writer, `mutation { createSession(sessionId: "sess_gw_1", metadata: { doc: "a.pdf" }) {
    sessionId version } }`)).createSession;
  assert.deepEqual(created, { sessionId: "sess_gw_1", version: 1 });
  assert.deepEqual((await list.value()).data.userSessions,
    [{ sessionId: "sess_gw_1", active: true, metadata: { doc: "a.pdf" }, version: 1 }]);

  const session = subscribe(live, SESSION, { id: "sess_gw_1" }, "session");
  const first = (await session.value()).data.session;
  assert.equal(first.version, 1);
  assert.equal(first.userId, USER);
  assert.deepEqual(first.metadata, { doc: "a.pdf" });

  const versions = [];
  const write = async (mutation) => {
    const data = await execute(writer, mutation);
    versions.push(Object.values(data)[0].version);
  };
  await write(`mutation { updateSession(sessionId: "sess_gw_1", metadata: { page: 2 }) { version } }`);
  await write(`mutation { touchSession(sessionId: "sess_gw_1") { version } }`);
  await write(`mutation { updateSession(sessionId: "sess_gw_1", metadata: { doc: null }) { version } }`);
  await write(`mutation { endSession(sessionId: "sess_gw_1") { version } }`);
  assert.deepEqual(versions, [2, 3, 4, 5]);

  const seen = [];
  for (let i = 0; i < 4; i++) seen.push((await session.value()).data.session);
  assert.deepEqual(seen.map((s) => s.version), [2, 3, 4, 5]);
  assert.deepEqual(seen.map((s) => s.metadata),
    [{ doc: "a.pdf", page: 2 }, { doc: "a.pdf", page: 2 }, { page: 2 }, { page: 2 }]);
  assert.deepEqual(seen.map((s) => s.active), [true, true, true, false]);
  assert.ok(seen[1].lastActivity > seen[0].lastActivity, "touchSession bumps lastActivity");
  assert.equal(seen[2].endedAt, null);
  assert.ok(seen[3].endedAt, "endSession sets endedAt");

  const lists = [];
  for (let i = 0; i < 4; i++) lists.push((await list.value()).data.userSessions);
  assert.deepEqual(lists.map((l) => l.map((s) => [s.sessionId, s.version, s.active])),
    [[["sess_gw_1", 2, true]], [["sess_gw_1", 3, true]], [["sess_gw_1", 4, true]], [["sess_gw_1", 5, false]]]);

  // The user: a mutation, a signed user.updated webhook, a mutation again.
  await execute(writer, `mutation { updateUser(preferences: { theme: "dark" }) { version } }`);
  await webhook(server, "user.updated", ["--user", USER, "--first-name", "Grace", "--last-name", "Hopper"]);
  await execute(writer, `mutation { updateUser(name: "Amazing Grace", preferences: { lang: "en" }) { version } }`);
  const users = [];
  for (let i = 0; i < 3; i++) users.push((await me.value()).data.currentUser);
  const v = meFirst.version;
  assert.deepEqual(users, [
    { externalId: USER, name: "Ada Lovelace", preferences: { theme: "dark" }, version: v + 1 },
    { externalId: USER, name: "Grace Hopper", preferences: { theme: "dark" }, version: v + 2 },
    { externalId: USER, name: "Amazing Grace", preferences: { theme: "dark", lang: "en" }, version: v + 3 },
  ]);

  // Payments: Clerk's paymentAttempt.created, then two updates of the same attempt.
  await webhook(server, "paymentAttempt.created", ["--user", USER, "--amount", "1999"]);
  await webhook(server, "paymentAttempt.updated", ["--user", USER, "--status", "failed", "--amount", "1999"]);
  await webhook(server, "paymentAttempt.updated", ["--user", USER, "--status", "paid", "--amount", "1999"]);
  const payments = [];
  for (let i = 0; i < 3; i++) payments.push((await payment.value()).data.latestPayment);
  const paymentId = payments[0].paymentId;
  assert.deepEqual(payments, [
    { paymentId, userId: USER, status: "pending", amount: 1999, version: 1 },
    { paymentId, userId: USER, status: "failed", amount: 1999, version: 2 },
    { paymentId, userId: USER, status: "paid", amount: 1999, version: 3 },
  ]);

  await drained(list, me, payment, session);
  for (const inbox of [list, me, payment, session]) {
    assert.deepEqual(inbox.errors, []);
    assert.equal(inbox.completed, false);
  }
});

test("bad credentials: the server closes with 4403 and the client reports it, without retrying forever", async () => {
  // graphql-ws's own default retries 4403 (Forbidden: "might grant access after retry",
  // dist/client.js shouldRetryConnectOrThrow), up to retryAttempts, then reports the close.
  const closed = [];
  let attempts = 0;
  const defaults = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { authToken: "not-a-token" },
    retryAttempts: 2,
    retryWait: () => sleep(20),
    on: { connecting: () => { attempts++; }, closed: (event) => closed.push(event.code) },
  });
  clients.push(defaults);
  const denied = subscribe(defaults, CURRENT_USER, {}, "default retries");
  const outcome = await denied.next(10_000);
  assert.equal(outcome.kind, "error");
  assert.equal(outcome.error.code, 4403);
  assert.equal(attempts, 3, "one connection, then retryAttempts (2) retries, then it stops");
  assert.deepEqual(closed, [4403, 4403, 4403]);

  // The README's client does not retry a refused login: one attempt, then the error sink.
  for (const params of [{ Authorization: "Bearer not-a-token" }, { authToken: `${token}x` }, {}]) {
    const events = [];
    const client = connect(params, {
      connecting: () => events.push("connecting"),
      connected: () => events.push("connected"),
      closed: (event) => events.push(event.code),
    });
    const inbox = subscribe(client, CURRENT_USER, {}, JSON.stringify(params));
    const item = await inbox.next(10_000);
    assert.equal(item.kind, "error", `${JSON.stringify(params)}: ${JSON.stringify(item)}`);
    assert.equal(item.error.code, 4403);
    await sleep(300);
    assert.deepEqual(events, ["connecting", 4403], JSON.stringify(params));
  }
});

// graphql-ws 6.4.2, dist/client.js `isFatalInternalCloseCode`: 1000–1999 are fatal except these
// (and `shouldRetryConnectOrThrow` adds 4400, 4401, 4406, 4409, 4429, 4500, 4005).
const RETRYABLE_1XXX = [1000, 1001, 1005, 1006, 1012, 1013, 1014];

test("reconnection: SIGTERM, restart on the same port and data; a fresh snapshot, then later changes", async () => {
  const closed = [];
  const connected = [];
  const client = connect({ authToken: token }, {
    closed: (event) => closed.push(event.code),
    connected: (_socket, _payload, wasRetry) => connected.push(wasRetry),
  });
  const writer = () => connect({ Authorization: `Bearer ${token}` });
  await execute(writer(), `mutation { createSession(sessionId: "sess_gw_2", metadata: { n: 1 }) { version } }`);
  const me = subscribe(client, CURRENT_USER, {}, "currentUser");
  const session = subscribe(client, SESSION, { id: "sess_gw_2" }, "session");
  const before = (await me.value()).data.currentUser;
  assert.equal((await session.value()).data.session.version, 1);
  assert.deepEqual(connected, [false]);

  const started = Date.now();
  assert.equal(await server.stop("SIGTERM"), 0);
  // The server said goodbye with a close frame whose code graphql-ws retries on.
  assert.equal(closed[0], 1012, `close codes: ${closed}`);
  assert.ok(RETRYABLE_1XXX.includes(closed[0]));
  await server.start();

  // The real client reconnects by itself (it would not on a fatal code) and subscribes again:
  // a fresh snapshot of each, as stored before the restart.
  const again = (await me.value(30_000)).data.currentUser;
  assert.deepEqual(again, before);
  const sessionAgain = (await session.value(30_000)).data.session;
  assert.equal(sessionAgain.version, 1);
  assert.deepEqual(sessionAgain.metadata, { n: 1 });
  assert.deepEqual(connected, [false, true]);
  console.log(`reconnected ${Date.now() - started} ms after SIGTERM; close codes ${closed.join(", ")}`);

  // Then each later change.
  const w = writer();
  await execute(w, `mutation { updateSession(sessionId: "sess_gw_2", metadata: { n: 2 }) { version } }`);
  await execute(w, `mutation { updateUser(name: "After Restart") { version } }`);
  const changed = (await session.value()).data.session;
  assert.deepEqual([changed.version, changed.metadata], [2, { n: 2 }]);
  const renamed = (await me.value()).data.currentUser;
  assert.deepEqual([renamed.name, renamed.version], ["After Restart", before.version + 1]);
  await drained(me, session);
  assert.deepEqual([me.errors, session.errors], [[], []]);
});

test("reconnection with graphql-ws's own retryAttempts and retryWait: only shouldRetry widened", async () => {
  // graphql-ws's defaults: 5 attempts, 2^n s + 0.3–3 s apart. Its default shouldRetry
  // (isLikeCloseEvent) gives up on the first attempt a restarting server refuses, which `ws`
  // reports as an error event, not a close: graphql-ws's documented remedy is a shouldRetry
  // that accepts errors too. Nothing else is configured here.
  const connected = [];
  const closed = [];
  const client = createClient({
    url: server.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { authToken: token },
    shouldRetry: () => true,
    on: {
      connected: (_socket, _payload, wasRetry) => connected.push(wasRetry),
      closed: (event) => closed.push(event.code),
    },
  });
  clients.push(client);
  const me = subscribe(client, CURRENT_USER, {}, "currentUser (defaults)");
  const before = (await me.value()).data.currentUser;

  const started = Date.now();
  assert.equal(await server.stop("SIGTERM"), 0);
  assert.equal(closed[0], 1012);
  await server.start();
  assert.deepEqual((await me.value(45_000)).data.currentUser, before);
  assert.deepEqual(connected, [false, true]);
  console.log(`defaults: reconnected ${Date.now() - started} ms after SIGTERM`);

  await execute(connect({ authToken: token }), `mutation { updateUser(name: "Defaults") { version } }`);
  const renamed = (await me.value()).data.currentUser;
  assert.deepEqual([renamed.name, renamed.version], ["Defaults", before.version + 1]);
  await drained(me);
  assert.deepEqual(me.errors, []);
});
