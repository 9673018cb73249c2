// graphql-http's own conformance audit (the GraphQL-over-HTTP spec's MUST and SHOULD rules),
// run unmodified against a real server. MAY-level notices are printed, not required.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { auditServer } from "graphql-http";
import { startServer } from "./support.mjs";

let server;
before(async () => { server = await startServer(); });
after(async () => { await server?.stop(); });

test("graphql-http auditServer: no MUST or SHOULD failures", async () => {
  const results = await auditServer({ url: server.url });
  assert.ok(results.length > 50, `only ${results.length} audits ran`);
  const failing = [];
  for (const result of results) {
    if (result.status === "ok") continue;
    const level = { error: "MUST", warn: "SHOULD", notice: "MAY" }[result.status];
    let body = "";
    try { body = await result.response.text(); } catch { /* already read */ }
    const line = `${level} ${result.id} ${result.name}: ${result.reason} (${result.response.status} ${body.slice(0, 200)})`;
    if (result.status === "notice") console.log(`notice: ${line}`);
    else failing.push(line);
  }
  assert.deepEqual(failing, [], `audits failing:\n${failing.join("\n")}`);
});
