// Reads the tenant's own orders through ctx.db and caches the summary with ctx.cache.
//
// Setup (once, by an operator): the host's table must have a tenant_id uuid column.
//   jsrt db expose orders
//   jsrt scripts create --tenant T --name orders-summary --type http \
//        --http-path /orders/summary --methods GET --file examples/tenant_orders.js --activate
//   curl http://127.0.0.1:8080/t/T/orders/summary?status=paid
//
// Only the calling tenant's rows are ever visible: the database enforces it (row-level
// security under the role jsrt_tenant_data), whatever the SQL says.
const CACHE_SECONDS = 30;

export default async function (input, ctx) {
  const status = (input && input.query && input.query.status) || null;
  const key = 'orders-summary:' + (status || 'all');
  const cached = await ctx.cache.get(key);
  if (cached !== null) return { ...cached, cached: true };

  const byStatus = await ctx.db.query(
    `SELECT status, count(*) AS orders, coalesce(sum(total), 0) AS total
       FROM orders
      WHERE $1::text IS NULL OR status = $1
      GROUP BY status
      ORDER BY status`,
    [status]);
  const latest = await ctx.db.query(
    `SELECT id, status, total, created_at
       FROM orders
      WHERE $1::text IS NULL OR status = $1
      ORDER BY created_at DESC, id DESC
      LIMIT 5`,
    [status]);
  const summary = {
    byStatus,
    latest,
    orders: byStatus.reduce((n, row) => n + row.orders, 0),
  };
  await ctx.cache.set(key, summary, CACHE_SECONDS);
  await ctx.cache.increment('summaries-computed');
  return { ...summary, cached: false };
}
