// Apollo Client 4 (@apollo/client 4.3) and Apollo Client 3 (3.14, installed as the npm alias
// `apollo-client-3`), unmodified, against a real `datadiver-graph serve`: HttpLink for queries
// and mutations, GraphQLWsLink (graphql-ws) for subscriptions, split by operation type, and an
// InMemoryCache with NO typePolicies. The same scenarios run on both versions:
//  - the frontend flow: getCurrentUser, createSession, the `session` subscription, then
//    updateSession / touchSession / endSession, each change arriving on it in order;
//  - subscription results land in the normalised cache and update watched queries of the
//    same entities, for changes made by another client or by a Clerk webhook (User, Session,
//    PaymentAttempt, BillingSubscription, SubscriptionItem, Plan);
//  - every object type a frontend caches has an `id` Apollo's defaultDataIdFromObject keys
//    on (`Typename:id` in cache.extract(), cache.identify agrees).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import * as apollo4 from "@apollo/client";
import { GraphQLWsLink as GraphQLWsLink4 } from "@apollo/client/link/subscriptions";
import { getMainDefinition as getMainDefinition4 } from "@apollo/client/utilities";
// Apollo Client 3 has no package "exports": a bundler resolves "@apollo/client/core" through
// core/package.json's "module" field to core/index.js; Node's ESM loader needs the file named.
import * as apollo3 from "apollo-client-3/core/index.js";
import { GraphQLWsLink as GraphQLWsLink3 } from "apollo-client-3/link/subscriptions/index.js";
import { getMainDefinition as getMainDefinition3 } from "apollo-client-3/utilities/index.js";
import { Inbox, devToken, sleep, startServer, webhook } from "./support.mjs";
import { subscriptionEvent, subscriptionItem } from "./clerk_billing.mjs";

const VERSIONS = [
  { name: "Apollo Client 4", user: "user_apollo4", ...apollo4,
    GraphQLWsLink: GraphQLWsLink4, getMainDefinition: getMainDefinition4 },
  { name: "Apollo Client 3", user: "user_apollo3", ...apollo3,
    GraphQLWsLink: GraphQLWsLink3, getMainDefinition: getMainDefinition3 },
];

let server;
const opened = [];

before(async () => {
  server = await startServer();
});

after(async () => {
  for (const { client, wsClient } of opened) {
    client.stop();
    await wsClient.dispose();
  }
  await server?.stop();
});

// ---- the client, as the README shows it ------------------------------------------------------
/** An Apollo client: queries and mutations over HTTP, subscriptions over graphql-ws.
 * `getToken` returns the Clerk session token (Clerk: `() => clerk.session.getToken()`). */
function apolloClient({ ApolloClient, InMemoryCache, HttpLink, split, GraphQLWsLink, getMainDefinition }, getToken) {
  const httpLink = new HttpLink({
    uri: server.url, // https://api.example.com/graphql
    // A fresh token on every request (Clerk's expire after a minute).
    fetch: async (uri, options) => {
      const headers = new Headers(options.headers);
      headers.set("authorization", `Bearer ${await getToken()}`);
      return fetch(uri, { ...options, headers });
    },
  });
  const wsClient = createClient({
    url: server.wsUrl, // wss://api.example.com/graphql
    webSocketImpl: WebSocket, // browsers: leave out
    connectionParams: async () => ({ authToken: await getToken() }),
  });
  const link = split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    new GraphQLWsLink(wsClient),
    httpLink,
  );
  // No typePolicies: every cached type has an `id`, which Apollo keys on by default.
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  opened.push({ client, wsClient });
  return client;
}
// ---------------------------------------------------------------------------------------------

/** Every result of a watched query or subscription, as an Inbox. */
function follow(observable, name) {
  const inbox = new Inbox(name);
  const subscription = observable.subscribe(inbox.observer);
  inbox.stop = () => subscription.unsubscribe();
  return inbox;
}

/** The first data of `inbox` (skipping loading states) for which `predicate` holds. */
async function until(inbox, predicate, ms = 6000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    let item;
    try {
      item = await inbox.next(Math.max(deadline - Date.now(), 1));
    } catch {
      throw new Error(`${inbox.name}: not within ${ms} ms; last data ${JSON.stringify(last)}`);
    }
    if (item.kind !== "next") throw new Error(`${inbox.name}: ${item.kind} ${item.error ?? ""}`);
    const { data, error, errors } = item.value;
    if (error || errors?.length) throw new Error(`${inbox.name}: ${error ?? JSON.stringify(errors)}`);
    if (data) {
      last = data;
      if (predicate(data)) return data;
    }
  }
}

/** The next subscription result's data; fails on errors. */
async function nextData(inbox) {
  const { data, error, errors } = await inbox.value();
  assert.ok(!error && !errors?.length, `${inbox.name}: ${error ?? JSON.stringify(errors)}`);
  return data;
}

const SESSION = "id sessionId active metadata lastActivity endedAt version";

for (const lib of VERSIONS) {
  const { gql } = lib;
  const USER = lib.user;
  const GET_ME = gql`query Me { getCurrentUser { id externalId name version } }`;
  const CREATE = gql`mutation Create($metadata: JSON) { createSession(metadata: $metadata) { ${SESSION} } }`;
  const UPDATE = gql`mutation Update($id: String!, $metadata: JSON) {
    updateSession(sessionId: $id, metadata: $metadata) { ${SESSION} } }`;
  const TOUCH = gql`mutation Touch($id: String!) { touchSession(sessionId: $id) { ${SESSION} } }`;
  const END = gql`mutation End($id: String!) { endSession(sessionId: $id) { ${SESSION} } }`;
  const ON_SESSION = gql`subscription OnSession($id: String!) { session(sessionId: $id) { ${SESSION} } }`;
  const GET_SESSION = gql`query GetSession($id: String!) { getSession(sessionId: $id) { ${SESSION} } }`;
  const MY_SESSIONS = gql`query MySessions { getUserSessions { nodes { id sessionId metadata version } } }`;
  const ON_ME = gql`subscription OnMe { currentUser { id name version } }`;
  const LATEST = gql`query Latest { getLatestPayment { id paymentId status amount version } }`;
  const ON_LATEST = gql`subscription OnLatest { latestPayment { id status version } }`;
  const BILLING_FIELDS = `id subscriptionId status billingStatus plan { id name slug }
    items { id status plan { id slug } } version`;
  const GET_BILLING = gql`query Billing { getSubscription { ${BILLING_FIELDS} } }`;
  const ON_BILLING = gql`subscription OnBilling {
    billingStatus { id userId billingStatus plan { id slug } subscription { ${BILLING_FIELDS} } } }`;

  describe(lib.name, () => {
    let token;
    let watcher; // the client of the cache scenario, inspected by the identity test

    before(async () => {
      await webhook(server, "user.created", ["--user", USER, "--first-name", "Ada"]);
      token = await devToken(server, USER);
    });

    test("the frontend flow: each session change arrives on the subscription, in order", async () => {
      const client = apolloClient(lib, async () => token);
      const me = await client.query({ query: GET_ME });
      assert.equal(me.data.getCurrentUser.externalId, USER);
      assert.equal(me.data.getCurrentUser.name, "Ada");

      const created = await client.mutate({ mutation: CREATE, variables: { metadata: { doc: "a.pdf" } } });
      const session = created.data.createSession;
      assert.equal(session.active, true);
      assert.equal(session.version, 1);
      const id = session.sessionId;

      const live = follow(client.subscribe({ query: ON_SESSION, variables: { id } }), `${lib.name} session`);
      const snapshot = (await nextData(live)).session;
      assert.equal(snapshot.id, session.id);
      assert.equal(snapshot.version, 1);

      await client.mutate({ mutation: UPDATE, variables: { id, metadata: { title: "Report" } } });
      const updated = (await nextData(live)).session;
      assert.equal(updated.version, 2);
      assert.deepEqual(updated.metadata, { doc: "a.pdf", title: "Report" });

      await client.mutate({ mutation: TOUCH, variables: { id } });
      const touched = (await nextData(live)).session;
      assert.equal(touched.version, 3);
      assert.ok(touched.lastActivity >= updated.lastActivity);

      await client.mutate({ mutation: END, variables: { id } });
      const ended = (await nextData(live)).session;
      assert.equal(ended.version, 4);
      assert.equal(ended.active, false);
      assert.ok(ended.endedAt);

      await sleep(200);
      assert.equal(live.items.length, 0, "nothing after the four changes");
      live.stop();
    });

    test("subscription results update watched queries through the normalised cache", async () => {
      const client = apolloClient(lib, async () => token);
      watcher = client;
      const other = apolloClient(lib, async () => token); // another tab: its own cache

      // Session: changed by the other client; this one sees it only through its subscription.
      const { data } = await other.mutate({ mutation: CREATE, variables: { metadata: { doc: "b.pdf" } } });
      const id = data.createSession.sessionId;
      const one = follow(client.watchQuery({ query: GET_SESSION, variables: { id } }), `${lib.name} getSession`);
      const list = follow(client.watchQuery({ query: MY_SESSIONS }), `${lib.name} getUserSessions`);
      await until(one, (d) => d.getSession?.version === 1);
      await until(list, (d) => d.getUserSessions.nodes.some((n) => n.sessionId === id));
      const live = follow(client.subscribe({ query: ON_SESSION, variables: { id } }), `${lib.name} session`);
      assert.equal((await nextData(live)).session.version, 1);
      await other.mutate({ mutation: UPDATE, variables: { id, metadata: { title: "From the other tab" } } });
      assert.equal((await nextData(live)).session.version, 2);
      const seen = await until(one, (d) => d.getSession.version === 2);
      assert.deepEqual(seen.getSession.metadata, { doc: "b.pdf", title: "From the other tab" });
      const listed = await until(list, (d) => d.getUserSessions.nodes.find((n) => n.sessionId === id).version === 2);
      assert.equal(listed.getUserSessions.nodes.find((n) => n.sessionId === id).metadata.title, "From the other tab");

      // User: renamed by a Clerk webhook.
      const me = follow(client.watchQuery({ query: GET_ME }), `${lib.name} getCurrentUser`);
      const before = (await until(me, (d) => d.getCurrentUser?.name === "Ada")).getCurrentUser;
      const meLive = follow(client.subscribe({ query: ON_ME }), `${lib.name} currentUser`);
      await nextData(meLive);
      await webhook(server, "user.updated", ["--user", USER, "--first-name", "Grace"]);
      const renamed = await until(me, (d) => d.getCurrentUser.name === "Grace");
      assert.equal(renamed.getCurrentUser.id, before.id);
      assert.ok(renamed.getCurrentUser.version > before.version);

      // PaymentAttempt: Clerk reports the pending attempt paid.
      await webhook(server, "paymentAttempt.created", ["--user", USER, "--status", "pending"]);
      const latest = follow(client.watchQuery({ query: LATEST }), `${lib.name} getLatestPayment`);
      const pending = (await until(latest, (d) => d.getLatestPayment?.status === "pending")).getLatestPayment;
      const payLive = follow(client.subscribe({ query: ON_LATEST }), `${lib.name} latestPayment`);
      await nextData(payLive);
      await webhook(server, "paymentAttempt.updated", ["--user", USER, "--status", "paid"]);
      const paid = (await until(latest, (d) => d.getLatestPayment.status === "paid")).getLatestPayment;
      assert.equal(paid.id, pending.id);
      assert.equal(paid.amount, pending.amount);

      // BillingSubscription, its items and plans: Clerk moves the user from Free to Pro.
      const t0 = Date.now();
      const subscription = { userId: USER, subscriptionId: `csub_${USER}`, status: "active" };
      await subscriptionEvent(server, "subscription.created", { ...subscription, updatedAt: t0,
        items: [subscriptionItem(`csubi_free_${USER}`, "active", "free", t0)] });
      const billing = follow(client.watchQuery({ query: GET_BILLING }), `${lib.name} getSubscription`);
      const free = (await until(billing, (d) => d.getSubscription?.plan?.slug === "free_user")).getSubscription;
      const billingLive = follow(client.subscribe({ query: ON_BILLING }), `${lib.name} billingStatus`);
      const state = (await nextData(billingLive)).billingStatus;
      assert.equal(state.id, USER);
      assert.equal(state.subscription.id, free.id);
      await subscriptionEvent(server, "subscription.updated", { ...subscription, updatedAt: t0 + 1000,
        items: [subscriptionItem(`csubi_free_${USER}`, "ended", "free", t0 + 1000),
          subscriptionItem(`csubi_pro_${USER}`, "active", "pro", t0 + 1000)] });
      const pro = (await until(billing, (d) => d.getSubscription.plan?.slug === "pro")).getSubscription;
      assert.equal(pro.id, free.id);
      assert.equal(pro.billingStatus, "ACTIVE");
      assert.ok(pro.version > free.version);
      assert.deepEqual(
        pro.items.map((item) => [item.id, item.status, item.plan.slug]).sort(),
        [[`csubi_free_${USER}`, "ended", "free_user"], [`csubi_pro_${USER}`, "active", "pro"]],
      );

      for (const inbox of [one, list, live, me, meLive, latest, payLive, billing, billingLive]) inbox.stop();
    });

    test("every cached entity is normalised under Typename:id (no typePolicies)", () => {
      assert.ok(watcher, "runs after the cache scenario");
      const cache = watcher.cache;
      const stored = cache.extract();
      const keys = Object.keys(stored);
      const expected = {
        User: 1, Session: 1, PaymentAttempt: 1, BillingSubscription: 1, BillingState: 1,
        SubscriptionItem: 2, Plan: 2,
      };
      for (const [typename, count] of Object.entries(expected)) {
        const found = keys.filter((key) => key.startsWith(`${typename}:`));
        assert.ok(found.length >= count, `${typename}: ${found.length} cached entities in ${keys}`);
        for (const key of found) {
          assert.equal(cache.identify(stored[key]), key);
          assert.equal(cache.identify({ __typename: typename, id: stored[key].id }), key);
        }
      }
      assert.ok(keys.includes(`BillingState:${USER}`));
      assert.ok(keys.includes("Plan:cplan_pro") && keys.includes("Plan:cplan_free"));
      assert.ok(keys.includes(`SubscriptionItem:csubi_pro_${USER}`));
      // No entity is stored inline (an object Apollo could not key): only the connections'
      // wrappers (SessionConnection, PageInfo, ...) are.
      const inline = [];
      const visit = (value, path) => {
        if (Array.isArray(value)) value.forEach((item, i) => visit(item, `${path}[${i}]`));
        else if (value && typeof value === "object") {
          if (value.__typename && Object.hasOwn(expected, value.__typename)) {
            inline.push(`${path}: ${value.__typename}`);
          }
          for (const [field, child] of Object.entries(value)) {
            if (field !== "metadata") visit(child, `${path}.${field}`);
          }
        }
      };
      for (const [key, entity] of Object.entries(stored)) {
        for (const [field, child] of Object.entries(entity)) visit(child, `${key}.${field}`);
      }
      assert.deepEqual(inline, []);
    });
  });
}

test("the schema gives every object type a frontend caches an id", async () => {
  const client = apolloClient(VERSIONS[0], async () => devToken(server, VERSIONS[0].user));
  const { data } = await client.query({
    query: apollo4.gql`{ __schema { types { name kind fields { name } } } }`,
    fetchPolicy: "no-cache",
  });
  const wrappers = /^(Query|Mutation|Subscription|PageInfo|.*Connection|.*Edge)$/;
  const objects = data.__schema.types.filter((t) => t.kind === "OBJECT" && !t.name.startsWith("__"));
  const withoutId = objects.filter((t) => !wrappers.test(t.name) && !t.fields.some((f) => f.name === "id"));
  assert.deepEqual(withoutId.map((t) => t.name), []);
  assert.ok(objects.some((t) => t.name === "BillingState"));
});
