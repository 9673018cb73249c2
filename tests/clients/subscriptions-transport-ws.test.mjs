// The legacy Apollo transport: subscriptions-transport-ws 0.11.0's `SubscriptionClient`
// (subprotocol `graphql-ws`), unmodified, on Node with `ws`, against a real server:
// `currentUser` with connectionParams auth, the snapshot, then each change from a signed
// Clerk webhook and from a mutation, in version order.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import transport from "subscriptions-transport-ws";
import WebSocket from "ws";
import { Inbox, bearer, devToken, postGraphQL, sleep, startServer, webhook } from "./support.mjs";

const { SubscriptionClient } = transport;
const USER = "user_stws_ada";
let server;
let token;
const clients = [];

before(async () => {
  server = await startServer();
  await webhook(server, "user.created", ["--user", USER, "--first-name", "Ada", "--last-name", "Lovelace"]);
  token = await devToken(server, USER);
});

after(async () => {
  for (const client of clients) client.close();
  await server?.stop();
});

const CURRENT_USER = "subscription { currentUser { externalId name preferences version } }";

test("currentUser: the snapshot, then a webhook's change and a mutation's, in order", async () => {
  const client = new SubscriptionClient(server.wsUrl, { connectionParams: { authToken: token }, reconnect: false }, WebSocket);
  clients.push(client);
  const me = new Inbox("currentUser");
  client.request({ query: CURRENT_USER }).subscribe(me.observer);

  const first = (await me.value()).data.currentUser;
  assert.deepEqual(first, { externalId: USER, name: "Ada Lovelace", preferences: {}, version: first.version });

  await webhook(server, "user.updated", ["--user", USER, "--first-name", "Grace", "--last-name", "Hopper"]);
  const renamed = (await me.value()).data.currentUser;
  assert.deepEqual(renamed, { externalId: USER, name: "Grace Hopper", preferences: {}, version: first.version + 1 });

  const mutation = await postGraphQL(server, `mutation { updateUser(preferences: { theme: "dark" }) { version } }`, {}, bearer(token));
  assert.equal(mutation.data.updateUser.version, first.version + 2);
  const preferred = (await me.value()).data.currentUser;
  assert.deepEqual(preferred, { externalId: USER, name: "Grace Hopper", preferences: { theme: "dark" }, version: first.version + 2 });

  await sleep(300);
  assert.deepEqual(me.items, [], "each change once");
  assert.deepEqual(me.errors, []);
  assert.equal(me.completed, false);
});

test("bad credentials: connection_error to connectionCallback, then a close, and no data", async () => {
  // The legacy protocol's rejection is GQL_CONNECTION_ERROR followed by a close with 1011, as
  // subscriptions-transport-ws's own server does (dist/server.js); 4403 is graphql-transport-ws's.
  let rejected;
  const rejection = new Promise((resolve) => { rejected = resolve; });
  const client = new SubscriptionClient(server.wsUrl, {
    connectionParams: { authToken: "not-a-token" },
    reconnect: false,
    connectionCallback: (error) => rejected(error),
  }, WebSocket);
  clients.push(client);
  const closed = new Promise((resolve) => client.onDisconnected(() => resolve(client.client?.readyState ?? "gone")));
  const codes = [];
  client.client.addEventListener("close", (event) => codes.push(event.code));
  const me = new Inbox("refused");
  client.request({ query: CURRENT_USER }).subscribe(me.observer);
  const error = await Promise.race([rejection, sleep(10_000).then(() => "no connection_error")]);
  assert.ok(error && typeof error === "object", `connectionCallback got ${JSON.stringify(error)}`);
  await Promise.race([closed, sleep(10_000)]);
  assert.deepEqual(codes, [1011]);
  await sleep(200);
  assert.equal(me.items.filter((item) => item.kind === "next").length, 0, "no data for a refused login");
});
