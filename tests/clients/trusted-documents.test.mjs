// Trusted documents from a real @graphql-codegen/client-preset build (cli 7.4, preset 6.2,
// `persistedDocuments: true`): codegen writes persisted-documents.json and embeds each
// document's hash in the generated DocumentNode (`__meta__.hash`); a server started with
// TRUSTED_DOCUMENTS_PATH=<that file> and TRUSTED_DOCUMENTS_ONLY=true runs those documents,
// by documentId (POST and GET) or APQ hash, and refuses anything else.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { startServer } from "./support.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const SCHEMA = resolve(here, "../../schema.graphql");
const OPERATIONS = `query Me {
  getCurrentUser {
    name
  }
}

query Session($sessionId: String!) {
  getSession(sessionId: $sessionId) {
    sessionId
  }
}
`;

let server;
let manifest;
let documents;

/** The codegen.ts of the README, with this test's paths. */
function codegenConfig(dir) {
  return `import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: ${JSON.stringify(SCHEMA)},
  documents: [${JSON.stringify(join(dir, "src/**/*.graphql"))}],
  generates: {
    ${JSON.stringify(join(dir, "src/gql/"))}: {
      preset: "client",
      presetConfig: { persistedDocuments: true },
    },
  },
};
export default config;
`;
}

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "ddg-codegen-"));
  mkdirSync(join(dir, "src"));
  writeFileSync(join(dir, "src/operations.graphql"), OPERATIONS);
  writeFileSync(join(dir, "codegen.ts"), codegenConfig(dir));
  // Run from here so codegen finds the preset in this node_modules.
  await promisify(execFile)(join(here, "node_modules/.bin/graphql-codegen"), ["--config", join(dir, "codegen.ts")], { cwd: here });
  const path = join(dir, "src/gql/persisted-documents.json");
  manifest = JSON.parse(readFileSync(path, "utf8"));
  // The DocumentNodes an app imports from src/gql (graphql.ts), with their __meta__.hash.
  const generated = readFileSync(join(dir, "src/gql/graphql.ts"), "utf8");
  documents = Object.fromEntries(
    [...generated.matchAll(/export const (\w+)Document = (\{.*\}) as unknown as/g)]
      .map(([, name, json]) => [name, JSON.parse(json)]),
  );
  server = await startServer({ env: { TRUSTED_DOCUMENTS_PATH: path, TRUSTED_DOCUMENTS_ONLY: "true" } });
});
after(async () => { await server?.stop(); });

// ---- the client, as the README shows it: client-preset's documented executor ---------------
async function execute(url, document, variables = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/graphql-response+json" },
    body: JSON.stringify({ documentId: document["__meta__"]["hash"], variables }),
  });
  return { status: response.status, body: await response.json() };
}
// --------------------------------------------------------------------------------------------

async function post(body) {
  const response = await fetch(server.url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/graphql-response+json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

const codes = (body) => (body.errors ?? []).map((error) => error.extensions?.code);

test("codegen wrote a manifest of both operations, keyed by the hash in each document", () => {
  assert.deepEqual(Object.keys(documents).sort(), ["Me", "Session"]);
  assert.equal(Object.keys(manifest).length, 2);
  for (const document of Object.values(documents)) {
    assert.ok(manifest[document.__meta__.hash], `no manifest entry for ${document.__meta__.hash}`);
  }
});

test("documentId (POST, and GET) runs the trusted document", async () => {
  assert.deepEqual(await execute(server.url, documents.Me), { status: 200, body: { data: { getCurrentUser: null } } });
  const session = await execute(server.url, documents.Session, { sessionId: "nope" });
  assert.equal(session.status, 200);
  assert.deepEqual(codes(session.body), ["UNAUTHENTICATED"]); // it ran: signed out
  const url = new URL(server.url);
  url.searchParams.set("documentId", documents.Me.__meta__.hash);
  const get = await fetch(url, { headers: { accept: "text/html, application/json" } });
  assert.match(get.headers.get("content-type"), /json/);
  assert.deepEqual(await get.json(), { data: { getCurrentUser: null } });
});

test("the APQ hash of a trusted document runs it", async () => {
  const sha256Hash = documents.Me.__meta__.hash.replace(/^sha256:/, "");
  const result = await post({ extensions: { persistedQuery: { version: 1, sha256Hash } } });
  assert.deepEqual(result, { status: 200, body: { data: { getCurrentUser: null } } });
});

test("anything else is refused with TRUSTED_DOCUMENT_REQUIRED", async () => {
  const query = "{ __typename }";
  const { createHash } = await import("node:crypto");
  const sha256Hash = createHash("sha256").update(query).digest("hex");
  for (const body of [
    { query },
    { query: "query Me { getCurrentUser { name email } }" },
    { query, extensions: { persistedQuery: { version: 1, sha256Hash } } }, // APQ registration
  ]) {
    const result = await post(body);
    assert.equal(result.status, 400, JSON.stringify(result));
    assert.deepEqual(codes(result.body), ["TRUSTED_DOCUMENT_REQUIRED"]);
    assert.equal("data" in result.body, false);
  }
  const unknown = await post({ documentId: `sha256:${"0".repeat(64)}` });
  assert.equal(unknown.status, 404);
  assert.deepEqual(codes(unknown.body), ["PERSISTED_QUERY_NOT_FOUND"]);
});
