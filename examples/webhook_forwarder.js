// Webhook forwarder: POSTs every event it is subscribed to to an HTTP endpoint.
//
//   jsrt scripts create --tenant $TENANT --name webhook-forwarder --type event \
//       --event-types order.created,order.paid --file examples/webhook_forwarder.js --activate
//
// The target is WEBHOOK_URL below, or the event's own `webhook_url` field when the publisher
// names one. A non-2xx answer (or no answer) throws: the execution fails, the event is
// dead-lettered and retried with backoff, and every attempt carries the same
// Idempotency-Key (the event id) so the receiver can drop duplicates.
// ctx.http.fetch refuses hosts that resolve to private or loopback addresses unless the
// operator allowlists them (JSRT_FETCH_ALLOWLIST).
const WEBHOOK_URL = 'https://hooks.example.com/jsrt';
const TIMEOUT_MS = 5000;

export default async function handler(event, ctx) {
  const { webhook_url: target, ...data } = event ?? {};
  const url = target ?? WEBHOOK_URL;
  const envelope = {
    id: ctx.trigger.event_id,
    type: ctx.trigger.event_type,
    published_at: ctx.trigger.published_at ?? null,
    attempt: ctx.trigger.attempt ?? 1,
    data,
  };
  const res = await ctx.http.fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'idempotency-key': String(ctx.trigger.event_id),
      'user-agent': 'jsruntime-webhook/1',
    },
    body: JSON.stringify(envelope),
    timeoutMs: TIMEOUT_MS,
  });
  if (!res.ok) {
    throw new Error(`webhook ${url} answered ${res.status}: ${String(res.body).slice(0, 200)}`);
  }
  console.log(`forwarded ${envelope.type} ${envelope.id} to ${url} (${res.status})`);
  return { forwarded_to: url, status: res.status };
}
