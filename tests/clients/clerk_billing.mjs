// Clerk Billing events for the client-conformance suite. `datadiver-graph dev-webhook` sends
// user.* and paymentAttempt.* only; subscription events are built here in Clerk's shape
// (`BillingSubscriptionWebhookEventJSON` of @clerk/backend, as tests/billing_support.py
// does) and signed as Svix signs them, with the server's development secret
// (DEV_WEBHOOK_SECRET in src/datadiver_graph/api/webhooks.py; public, never used in production).
import { createHmac, randomUUID } from "node:crypto";

export const DEV_WEBHOOK_SECRET = "whsec_ZGF0YWRpdmVyLWdyYXBoLWRldi13ZWJob29rLWtleSE=";

const PLANS = {
  free: { id: "cplan_free", name: "Free", slug: "free_user", amount: 0 },
  pro: { id: "cplan_pro", name: "Pro", slug: "pro", amount: 2000 },
};

/** Post a Clerk event (`{type, data}`) to the server's webhook endpoint, Svix-signed. */
export async function clerkEvent(server, type, data) {
  const now = Date.now();
  const body = JSON.stringify({ data, object: "event", timestamp: now, type });
  const id = `msg_${randomUUID().replaceAll("-", "")}`;
  const timestamp = String(Math.floor(now / 1000));
  const key = Buffer.from(DEV_WEBHOOK_SECRET.slice("whsec_".length), "base64");
  const signature = createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
  const response = await fetch(`${server.base}/webhooks/clerk`, {
    method: "POST",
    headers: { "content-type": "application/json", "svix-id": id, "svix-timestamp": timestamp,
      "svix-signature": `v1,${signature}` },
    body,
  });
  if (!response.ok) throw new Error(`webhook ${type}: ${response.status} ${await response.text()}`);
}

function plan(name) {
  const base = PLANS[name];
  return { ...base, object: "commerce_plan", is_default: base.amount === 0, period: "month",
    currency: "USD", is_recurring: true, product_id: "cprod_1" };
}

/** One subscription item (`status`: active, past_due, canceled, ...). */
export function subscriptionItem(id, status, planName, updatedAt) {
  return {
    object: "commerce_subscription_item", id, status, plan_id: PLANS[planName].id,
    plan: plan(planName), plan_period: "month", period_start: updatedAt,
    period_end: updatedAt + 30 * 86_400_000,
    canceled_at: status === "canceled" ? updatedAt : null,
    past_due_at: status === "past_due" ? updatedAt : null,
    created_at: updatedAt, updated_at: updatedAt,
  };
}

/** `subscription.created` / `.updated` / `.pastDue` for `userId`, listing `items`. */
export function subscriptionEvent(server, type, { userId, subscriptionId, status, updatedAt, items }) {
  return clerkEvent(server, type, {
    object: "commerce_subscription", id: subscriptionId, status,
    active_at: updatedAt, past_due_at: status === "past_due" ? updatedAt : null,
    created_at: updatedAt, updated_at: updatedAt, payer_id: `cpayer_${userId}`,
    payer: { object: "commerce_payer", id: `cpayer_${userId}`, user_id: userId,
      first_name: "Ada", created_at: updatedAt, updated_at: updatedAt },
    items,
  });
}
