// Event enricher: turns a bare `order.created` into an `order.enriched` event that carries
// what downstream scripts would otherwise each recompute: totals, tax, shipping and a
// customer segment. An order that cannot be priced becomes `order.rejected` instead.
//
//   jsrt scripts create --tenant $TENANT --name order-enricher --type event \
//       --event-types order.created --file examples/order_enricher.js --activate
//
// Input: {order_id, customer: {id, lifetime_value?}, country, items: [{sku, qty, unit_price}]}
const TAX_RATES = { FR: 0.2, DE: 0.19, GB: 0.2, US: 0, NL: 0.21 };
const FREE_SHIPPING_FROM = 100;
const SHIPPING = 7.5;

const round2 = (x) => Math.round(x * 100) / 100;

function problems(order) {
  const out = [];
  if (!order.order_id) out.push('order_id is missing');
  if (!Array.isArray(order.items) || order.items.length === 0) out.push('no items');
  for (const [i, it] of (order.items ?? []).entries()) {
    if (!(Number.isInteger(it.qty) && it.qty > 0)) out.push(`items[${i}].qty must be a positive integer`);
    if (!(typeof it.unit_price === 'number' && it.unit_price >= 0)) out.push(`items[${i}].unit_price must be >= 0`);
  }
  if (!(order.country in TAX_RATES)) out.push(`no tax rate for country ${order.country}`);
  return out;
}

function segment(customer) {
  const ltv = customer?.lifetime_value ?? 0;
  return ltv >= 5000 ? 'vip' : ltv >= 500 ? 'regular' : 'new';
}

export default async function handler(order, ctx) {
  const bad = problems(order ?? {});
  if (bad.length) {
    await ctx.events.publish('order.rejected', { order_id: order?.order_id ?? null, problems: bad });
    console.warn(`order ${order?.order_id} rejected: ${bad.join('; ')}`);
    return { rejected: true, problems: bad };
  }
  const subtotal = round2(order.items.reduce((sum, it) => sum + it.qty * it.unit_price, 0));
  const tax = round2(subtotal * TAX_RATES[order.country]);
  const shipping = subtotal >= FREE_SHIPPING_FROM ? 0 : SHIPPING;
  const enriched = {
    ...order,
    item_count: order.items.reduce((n, it) => n + it.qty, 0),
    subtotal, tax, shipping,
    total: round2(subtotal + tax + shipping),
    segment: segment(order.customer),
    source_event_id: ctx.trigger.event_id,
  };
  const id = await ctx.events.publish('order.enriched', enriched);
  return { order_id: order.order_id, total: enriched.total, enriched_event_id: id };
}
