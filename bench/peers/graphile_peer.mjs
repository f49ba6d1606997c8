// Graphile Worker driver for bench/compare.py (from the lab-peers harness in ../shared/peers;
// run with Node 22, which compare.py installs).
//
//   node graphile_peer.mjs schema  --dsn DSN
//   node graphile_peer.mjs enqueue --dsn DSN --n 20000 [--chunk 1000]   (WorkerUtils.addJobs)
//   node graphile_peer.mjs worker  --dsn DSN --conc C [--pool P] [--localqueue S] [--batchdelay D] --out FILE
//   node graphile_peer.mjs produce --dsn DSN --n 500 --gap-ms 20 --out FILE   (WorkerUtils.addJob, one by one)
//
// Set NO_LOG_SUCCESS=1 (Graphile's own switch) so the per-job "Completed task" console log
// does not dominate; the orchestrator does this.
import { run, makeWorkerUtils, runMigrations } from "graphile-worker";
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

const argv = process.argv.slice(2);
const cmd = argv[0];
const opt = (name, dflt) => {
  const k = argv.indexOf("--" + name);
  return k >= 0 ? argv[k + 1] : dflt;
};
const dsn = opt("dsn");
// wall-clock epoch ms with sub-ms resolution (Date.now() is whole ms only)
const nowMs = () => performance.timeOrigin + performance.now();

const REC = []; // [i, t0, tStart, tEnd]  (epoch ms)

async function cmdSchema() {
  await runMigrations({ connectionString: dsn });
}

async function cmdEnqueue() {
  const n = +opt("n", 20000), chunk = +opt("chunk", 1000);
  const utils = await makeWorkerUtils({ connectionString: dsn });
  await utils.migrate();
  const t = nowMs();
  for (let s = 0; s < n; s += chunk) {
    const specs = [];
    for (let k = s; k < Math.min(n, s + chunk); k++)
      specs.push({ identifier: "add", payload: { a: k, b: 1, i: k } });
    await utils.addJobs(specs);
  }
  const el = (nowMs() - t) / 1000;
  await utils.release();
  console.log(JSON.stringify({ enqueued: n, seconds: el, rate: n / el }));
}

async function cmdWorker() {
  const conc = +opt("conc", 1);
  const pool = +opt("pool", Math.max(10, conc + 2)); // Graphile's documented recommendation
  const lq = +opt("localqueue", -1);
  const bd = +opt("batchdelay", -1);
  const out = opt("out");
  const worker = {
    connectionString: dsn,
    concurrentJobs: conc,
    maxPoolSize: pool,
  };
  if (lq > 0) worker.localQueue = { size: lq };
  if (bd >= 0) { worker.completeJobBatchDelay = bd; worker.failJobBatchDelay = bd; }
  const taskList = {
    add: async (payload) => {
      const ts = nowMs();
      const r = payload.a + payload.b; // the "work"
      REC.push([payload.i, payload.t0 ?? null, ts, nowMs()]);
      return r;
    },
  };
  const meta = { t_run_called: nowMs() / 1000, options: worker };
  const runner = await run({ taskList, noHandleSignals: true, preset: { worker } });
  writeFileSync(out + ".ready", String(meta.t_run_called));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await runner.stop();
    meta.t_stopped = nowMs() / 1000;
    meta.peak_rss_kb = process.resourceUsage().maxRSS; // KiB
    meta.handled = REC.length;
    // convert to seconds to match the Python peer
    meta.records = REC.map(([i, t0, a, b]) => [i, t0 == null ? null : t0 / 1000, a / 1000, b / 1000]);
    writeFileSync(out, JSON.stringify(meta));
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

async function cmdProduce() {
  const n = +opt("n", 500), gap = +opt("gap-ms", 20), out = opt("out");
  const utils = await makeWorkerUtils({ connectionString: dsn });
  const res = [];
  let next = performance.now();
  for (let k = 0; k < n; k++) {
    const t0 = nowMs();
    await utils.addJob("add", { a: k, b: 1, i: k, t0 });
    res.push([k, t0 / 1000, nowMs() / 1000]);
    next += gap;
    const d = next - performance.now();
    if (d > 0) await new Promise((r) => setTimeout(r, d));
  }
  await utils.release();
  writeFileSync(out, JSON.stringify(res));
}

const fns = { schema: cmdSchema, enqueue: cmdEnqueue, worker: cmdWorker, produce: cmdProduce };
fns[cmd]().catch((e) => { console.error(e); process.exit(1); });
