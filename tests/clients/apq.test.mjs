// Automatic persisted queries with Apollo Client 4's own link (@apollo/client 4.3,
// PersistedQueryLink + HttpLink, SHA-256 from node:crypto), against a real server:
// the first run of a query is refused as PersistedQueryNotFound and the link registers it;
// later runs send the hash only. Both over POST and over GET (useGETForHashedQueries).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, test } from "node:test";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { startServer } from "./support.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

// ---- the client, as the README shows it ---------------------------------------------------
function apolloClient(url, { useGETForHashedQueries = false, fetch = globalThis.fetch } = {}) {
  const persisted = new PersistedQueryLink({
    sha256: (text) => createHash("sha256").update(text).digest("hex"),
    useGETForHashedQueries,
  });
  return new ApolloClient({
    link: persisted.concat(new HttpLink({ uri: url, fetch })),
    cache: new InMemoryCache(),
  });
}
// -------------------------------------------------------------------------------------------

/** A fetch that records what the link sent and what the server answered. */
function recordingFetch() {
  const calls = [];
  const fetchFn = async (uri, options) => {
    const url = new URL(uri);
    const body = options.body ? JSON.parse(options.body) : null;
    const extensions = url.searchParams.get("extensions");
    const response = await fetch(uri, options);
    calls.push({
      method: options.method ?? "GET",
      query: body?.query ?? url.searchParams.get("query"),
      persistedQuery: (body?.extensions ?? (extensions && JSON.parse(extensions)))?.persistedQuery,
      status: response.status,
      contentType: response.headers.get("content-type"),
      text: await response.clone().text(),
    });
    return response;
  };
  return { calls, fetchFn };
}

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

async function registerThenHashOnly(query, useGETForHashedQueries) {
  const first = recordingFetch();
  const one = apolloClient(server.url, { useGETForHashedQueries, fetch: first.fetchFn });
  const result = await one.query({ query, fetchPolicy: "no-cache" });
  assert.deepEqual(result.data, { getCurrentUser: null });
  // 1: the hash alone, refused as not found; 2: the text with its hash (always a POST).
  assert.equal(first.calls.length, 2, JSON.stringify(first.calls));
  const [miss, register] = first.calls;
  // The hash of the text the link sends (Apollo's print, with the __typename it adds).
  const expectedHash = sha256(register.query);
  assert.equal(miss.method, useGETForHashedQueries ? "GET" : "POST");
  // Apollo Client 4 accepts application/graphql-response+json: a request error is a 4xx.
  assert.equal(miss.status, 404);
  assert.equal(miss.query, null);
  assert.deepEqual(miss.persistedQuery, { version: 1, sha256Hash: expectedHash });
  assert.match(miss.contentType, /json/); // never the GraphiQL page
  const missBody = JSON.parse(miss.text);
  assert.equal("data" in missBody, false);
  assert.deepEqual(missBody.errors.map((e) => [e.message, e.extensions.code]),
    [["PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND"]]);
  assert.equal(register.method, "POST");
  assert.match(register.query, /getCurrentUser/);
  assert.deepEqual(register.persistedQuery, { version: 1, sha256Hash: expectedHash });

  // Another client (a new page load): the hash alone now runs.
  const second = recordingFetch();
  const two = apolloClient(server.url, { useGETForHashedQueries, fetch: second.fetchFn });
  const again = await two.query({ query, fetchPolicy: "no-cache" });
  assert.deepEqual(again.data, { getCurrentUser: null });
  assert.equal(second.calls.length, 1, JSON.stringify(second.calls));
  assert.equal(second.calls[0].method, useGETForHashedQueries ? "GET" : "POST");
  assert.equal(second.calls[0].query, null);
  assert.equal(second.calls[0].status, 200);
}

test("POST: not found, registered, then the hash alone runs", async () => {
  await registerThenHashOnly(gql`query ApqPost { getCurrentUser { name } }`, false);
});

test("GET (useGETForHashedQueries): not found, registered, then a GET with the hash alone runs", async () => {
  await registerThenHashOnly(gql`query ApqGet { getCurrentUser { name } }`, true);
});

test("a hash that does not match the query is refused, not run", async () => {
  const { calls, fetchFn } = recordingFetch();
  const persisted = new PersistedQueryLink({ sha256: () => "0".repeat(64) });
  const client = new ApolloClient({
    link: persisted.concat(new HttpLink({ uri: server.url, fetch: fetchFn })),
    cache: new InMemoryCache(),
  });
  await assert.rejects(
    client.query({ query: gql`query ApqWrong { getCurrentUser { name } }`, fetchPolicy: "no-cache" }),
    (error) => {
      assert.match(String(error.message), /provided sha does not match query/);
      return true;
    },
  );
  assert.equal(calls.length, 2, JSON.stringify(calls));
  assert.equal(calls[1].status, 400);
  assert.deepEqual(JSON.parse(calls[1].text).errors.map((e) => e.extensions.code),
    ["PERSISTED_QUERY_HASH_MISMATCH"]);
});
