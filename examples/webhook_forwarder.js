// Webhook forwarder: POSTs every event it is subscribed to to an HTTP endpoint, signed.
//
//   echo -n 'https://hooks.example.com/jsrt' | jsrt secrets set --tenant $TENANT WEBHOOK_URL
//   openssl rand -hex 32 | jsrt secrets set --tenant $TENANT WEBHOOK_SIGNING_KEY
//   jsrt scripts create --tenant $TENANT --name webhook-forwarder --type event \
//       --event-types order.created,order.paid --file examples/webhook_forwarder.js --activate
//
// The target and the signing key are tenant secrets: nothing of them is in the source (or in
// script_versions), and their values are masked in everything the execution records. The
// body is signed the way jsrt's own `hmac` endpoints check it, so another jsrt tenant can
// receive it directly:
//   X-Jsrt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + body)>
// A non-2xx answer (or no answer) throws: the execution fails, the event is dead-lettered and
// retried with backoff, and every attempt carries the same Idempotency-Key (the event id) so
// the receiver can drop duplicates.
// ctx.http.fetch refuses hosts that resolve to private or loopback addresses unless the
// operator allowlists them (JSRT_FETCH_ALLOWLIST).
const TIMEOUT_MS = 5000;

export default async function handler(event, ctx) {
  const url = await ctx.secrets.get('WEBHOOK_URL');
  const key = await ctx.secrets.get('WEBHOOK_SIGNING_KEY');
  const envelope = {
    id: ctx.trigger.event_id,
    type: ctx.trigger.event_type,
    published_at: ctx.trigger.published_at ?? null,
    attempt: ctx.trigger.attempt ?? 1,
    data: event ?? {},
  };
  const body = JSON.stringify(envelope);
  const t = Math.floor(Date.now() / 1000);
  const signature = await ctx.crypto.hmacSha256(key, `${t}.${body}`);
  const res = await ctx.http.fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'idempotency-key': String(ctx.trigger.event_id),
      'user-agent': 'jsruntime-webhook/1',
      'x-jsrt-signature': `t=${t},v1=${signature}`,
    },
    body,
    timeoutMs: TIMEOUT_MS,
  });
  if (!res.ok) {
    throw new Error(`webhook answered ${res.status}: ${String(res.body).slice(0, 200)}`);
  }
  console.log(`forwarded ${envelope.type} ${envelope.id} (${res.status})`);
  return { status: res.status };
}
