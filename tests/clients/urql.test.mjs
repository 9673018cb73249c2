// urql (@urql/core 6) unmodified, against a real `datadiver-graph serve`: fetchExchange for
// queries and mutations, subscriptionExchange forwarding subscriptions to a graphql-ws client
// (the recipe urql's docs give). The frontend flow: getCurrentUser, createSession, the
// `session` subscription, then updateSession / touchSession / endSession, each change
// arriving on it in order, and a change made elsewhere (a service caller) arriving too.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { cacheExchange, createClient as createUrqlClient, fetchExchange, gql, subscriptionExchange } from "@urql/core";
import { createClient as createWsClient } from "graphql-ws";
import WebSocket from "ws";
import { Inbox, SERVICE_KEY, devToken, postGraphQL, sleep, startServer, webhook } from "./support.mjs";

const USER = "user_urql_ada";
let server;
let token;
const wsClients = [];

before(async () => {
  server = await startServer();
  await webhook(server, "user.created", ["--user", USER, "--first-name", "Ada"]);
  token = await devToken(server, USER);
});

after(async () => {
  await Promise.allSettled(wsClients.map((client) => client.dispose()));
  await server?.stop();
});

// ---- the client, as the README shows it ------------------------------------------------------
/** `getToken` returns the Clerk session token (Clerk: `() => clerk.session.getToken()`). */
function urqlClient(getToken) {
  const wsClient = createWsClient({
    url: server.wsUrl, // wss://api.example.com/graphql
    webSocketImpl: WebSocket, // browsers: leave out
    connectionParams: async () => ({ authToken: await getToken() }),
  });
  wsClients.push(wsClient);
  return createUrqlClient({
    url: server.url, // https://api.example.com/graphql
    // A fresh token on every request (Clerk's expire after a minute).
    fetch: async (url, options) => {
      const headers = new Headers(options.headers);
      headers.set("authorization", `Bearer ${await getToken()}`);
      return fetch(url, { ...options, headers });
    },
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || "" };
          return {
            subscribe(sink) {
              const unsubscribe = wsClient.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
}
// ---------------------------------------------------------------------------------------------

const SESSION = "id sessionId active metadata lastActivity endedAt version";
const ME = gql`query Me { getCurrentUser { id externalId name } }`;
const CREATE = gql`mutation Create($metadata: JSON) { createSession(metadata: $metadata) { ${SESSION} } }`;
const UPDATE = gql`mutation Update($id: String!, $metadata: JSON) {
  updateSession(sessionId: $id, metadata: $metadata) { ${SESSION} } }`;
const TOUCH = gql`mutation Touch($id: String!) { touchSession(sessionId: $id) { ${SESSION} } }`;
const END = gql`mutation End($id: String!) { endSession(sessionId: $id) { ${SESSION} } }`;
const ON_SESSION = gql`subscription OnSession($id: String!) { session(sessionId: $id) { ${SESSION} } }`;

/** The data of an urql result; fails on its error. */
function dataOf(result) {
  assert.equal(result.error, undefined, `${result.error}`);
  return result.data;
}

test("urql: the frontend flow, each session change arriving on the subscription in order", async () => {
  const client = urqlClient(async () => token);
  const me = dataOf(await client.query(ME, {}).toPromise()).getCurrentUser;
  assert.equal(me.externalId, USER);
  assert.equal(me.name, "Ada");

  const session = dataOf(await client.mutation(CREATE, { metadata: { doc: "a.pdf" } }).toPromise()).createSession;
  assert.equal(session.version, 1);
  const id = session.sessionId;

  const live = new Inbox("urql session");
  const { unsubscribe } = client.subscription(ON_SESSION, { id }).subscribe((result) => live.push({ kind: "next", value: result }));
  const next = async () => dataOf(await live.value()).session;
  const snapshot = await next();
  assert.equal(snapshot.id, session.id);
  assert.equal(snapshot.version, 1);

  dataOf(await client.mutation(UPDATE, { id, metadata: { title: "Report" } }).toPromise());
  const updated = await next();
  assert.equal(updated.version, 2);
  assert.deepEqual(updated.metadata, { doc: "a.pdf", title: "Report" });

  dataOf(await client.mutation(TOUCH, { id }).toPromise());
  const touched = await next();
  assert.equal(touched.version, 3);
  assert.ok(touched.lastActivity >= updated.lastActivity);

  // A change made elsewhere (a backend job with the service key) arrives the same way.
  const byService = await postGraphQL(
    server,
    `mutation($id: String!) { updateSession(sessionId: $id, metadata: { summary: "done" }) { version } }`,
    { id },
    { "x-service-key": SERVICE_KEY },
  );
  assert.equal(byService.data?.updateSession?.version, 4, JSON.stringify(byService));
  const summarized = await next();
  assert.equal(summarized.version, 4);
  assert.equal(summarized.metadata.summary, "done");

  dataOf(await client.mutation(END, { id }).toPromise());
  const ended = await next();
  assert.equal(ended.version, 5);
  assert.equal(ended.active, false);
  assert.ok(ended.endedAt);

  await sleep(200);
  assert.equal(live.items.length, 0, "nothing after the changes");
  unsubscribe();
});
