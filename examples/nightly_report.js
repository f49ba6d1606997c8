// Nightly report: at 02:00 every night, ask for the report of the day that just ended.
//
//   jsrt scripts create --tenant $TENANT --name nightly-report --type scheduled \
//       --cron '0 2 * * *' --timezone UTC --file examples/nightly_report.js --activate
//
// Scripts do not query the database. This one works out which days need a report and
// publishes one `report.requested` event per day; whatever builds reports (another script
// subscribed to it, or a service reading the queue) does the heavy lifting. If the daemon
// was down for a few nights, the scheduler fires the latest tick once and says how many it
// folded into it (ctx.trigger.missed_ticks): the missed days are requested too, oldest
// first, so no night goes without its report.
const REPORT = 'daily-activity';
const DAY_MS = 24 * 60 * 60 * 1000;
const MAX_CATCH_UP_DAYS = 7;

function dayWindow(endMs) {
  // the UTC day that ends at midnight before `endMs`
  const end = Math.floor(endMs / DAY_MS) * DAY_MS;
  return { period_start: new Date(end - DAY_MS).toISOString(),
           period_end: new Date(end).toISOString() };
}

export default async function handler(input, ctx) {
  const firedFor = Date.parse(input.scheduled_for);
  if (Number.isNaN(firedFor)) throw new Error(`bad scheduled_for: ${input.scheduled_for}`);
  const missed = Math.min(ctx.trigger.missed_ticks ?? 0, MAX_CATCH_UP_DAYS - 1);
  const windows = [];
  for (let back = missed; back >= 0; back--) windows.push(dayWindow(firedFor - back * DAY_MS));
  const requested = [];
  for (const w of windows) {
    const id = await ctx.events.publish('report.requested',
                                        { report: REPORT, ...w, scheduled_for: input.scheduled_for });
    requested.push({ event_id: id, ...w });
  }
  console.log(`requested ${requested.length} ${REPORT} report(s), last for ${windows.at(-1).period_start}`);
  return { report: REPORT, requested: requested.length, days: requested,
           caught_up: missed };
}
