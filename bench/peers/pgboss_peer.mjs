// pg-boss driver for bench/compare.py (from the lab-peers harness in ../shared/peers; run with
// Node 22, which compare.py installs).
//
//   node pgboss_peer.mjs schema  --dsn DSN [--notify 1]          (start() migrates; createQueue)
//   node pgboss_peer.mjs enqueue --dsn DSN --n 20000 [--chunk 1000]   (boss.insert = bulk insert)
//   node pgboss_peer.mjs worker  --dsn DSN --conc C [--batch B] [--poll S] [--burst full|ready|none]
//                                [--notifypoll S] [--listen 1] --out FILE
//        conc  -> work() localConcurrency (independent polling loops in one process)
//        batch -> work() batchSize (jobs fetched+completed per round trip; handler gets an array)
//   node pgboss_peer.mjs produce --dsn DSN --n 500 --gap-ms 20 --out FILE   (boss.send one by one)
import { PgBoss } from "pg-boss";
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

const argv = process.argv.slice(2);
const cmd = argv[0];
const opt = (name, dflt) => {
  const k = argv.indexOf("--" + name);
  return k >= 0 ? argv[k + 1] : dflt;
};
const dsn = opt("dsn");
const Q = "bench";
const nowMs = () => performance.timeOrigin + performance.now();
const REC = [];

function mkBoss(extra = {}) {
  const boss = new PgBoss({ connectionString: dsn, ...extra });
  boss.on("error", (e) => console.error("pg-boss error:", e.message));
  return boss;
}

async function cmdSchema() {
  const boss = mkBoss();
  await boss.start();
  await boss.createQueue(Q, { notify: opt("notify", "1") === "1" });
  await boss.stop({ graceful: false, timeout: 1000 });
}

async function cmdEnqueue() {
  const n = +opt("n", 20000), chunk = +opt("chunk", 1000);
  const boss = mkBoss({ supervise: false, schedule: false });
  await boss.start();
  const t = nowMs();
  for (let s = 0; s < n; s += chunk) {
    const jobs = [];
    for (let k = s; k < Math.min(n, s + chunk); k++) jobs.push({ data: { a: k, b: 1, i: k } });
    await boss.insert(Q, jobs);
  }
  const el = (nowMs() - t) / 1000;
  await boss.stop({ graceful: false, timeout: 1000 });
  console.log(JSON.stringify({ enqueued: n, seconds: el, rate: n / el }));
}

async function cmdWorker() {
  const conc = +opt("conc", 1), batch = +opt("batch", 1), out = opt("out");
  const poll = opt("poll"); const burst = opt("burst", "none");
  const listen = opt("listen", "1") === "1";
  const pool = +opt("pool", Math.max(10, conc + 2));
  const work = { localConcurrency: conc, batchSize: batch };
  if (poll) work.pollingIntervalSeconds = +poll;
  const npoll = opt("notifypoll");
  if (npoll) work.notifyPollingIntervalSeconds = +npoll;
  if (burst === "full") work.burstWhenBatchFull = true;
  if (burst === "ready") work.burstWhenReadyExceeds = 1;
  const meta = { t_run_called: nowMs() / 1000, work, listen, pool };
  const boss = mkBoss({ useListenNotify: listen, max: pool });
  await boss.start();
  await boss.work(Q, work, async (jobs) => {
    const ts = nowMs();
    for (const job of jobs) {
      const r = job.data.a + job.data.b; // the "work"
      REC.push([job.data.i, job.data.t0 ?? null, ts, nowMs()]);
    }
  });
  writeFileSync(out + ".ready", String(meta.t_run_called));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await boss.stop({ graceful: true, timeout: 5000 });
    meta.t_stopped = nowMs() / 1000;
    meta.peak_rss_kb = process.resourceUsage().maxRSS;
    meta.handled = REC.length;
    meta.records = REC.map(([i, t0, a, b]) => [i, t0 == null ? null : t0 / 1000, a / 1000, b / 1000]);
    writeFileSync(out, JSON.stringify(meta));
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function cmdProduce() {
  const n = +opt("n", 500), gap = +opt("gap-ms", 20), out = opt("out");
  const boss = mkBoss({ supervise: false, schedule: false });
  await boss.start();
  const res = [];
  let next = performance.now();
  for (let k = 0; k < n; k++) {
    const t0 = nowMs();
    await boss.send(Q, { a: k, b: 1, i: k, t0 });
    res.push([k, t0 / 1000, nowMs() / 1000]);
    next += gap;
    const d = next - performance.now();
    if (d > 0) await new Promise((r) => setTimeout(r, d));
  }
  await boss.stop({ graceful: false, timeout: 1000 });
  writeFileSync(out, JSON.stringify(res));
}

const fns = { schema: cmdSchema, enqueue: cmdEnqueue, worker: cmdWorker, produce: cmdProduce };
fns[cmd]().catch((e) => { console.error(e); process.exit(1); });
