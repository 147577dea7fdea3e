/**
 * A sweep on a 3-node NATS JetStream cluster that loses a node: three nats-server processes clustered
 * on loopback (the configuration docs/deploy.md gives), streams and bucket created with
 * `--replicas 3`, an orchestrator and two `phasemap worker` processes given all three URLs. Mid-sweep
 * the node that leads the trial stream is SIGKILLed — after the leaders of the other streams and
 * consumers and the orchestrator's connection were gathered on it, so that one kill takes them all —
 * and started again with its store some seconds later. The sweep completes: every trial done once,
 * every (trial, attempt, step) row once.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import test from 'ava';
import { loadSweep } from '../orchestrator/spec.js';
import type { TrialState } from '../schemas/trial.js';
import { transportNames, type ProgressMessage } from '../schemas/transport.js';
import { duck, freePort, stderrOf, tempDir, trackedCli, until } from './helpers.js';

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

interface Node {
  name: string;
  conf: string;
  client: number;
  http: number;
  proc: ChildProcess | null;
}

/** Three clustered nats-servers on loopback, each with its own store, as in docs/deploy.md. */
class Cluster {
  private constructor(readonly nodes: Node[]) {}

  static async start(dir: string): Promise<Cluster> {
    const ports = await Promise.all(Array.from({ length: 9 }, freePort));
    const routes = [0, 1, 2].map((i) => `    nats-route://127.0.0.1:${ports[3 + i]}`).join('\n');
    const nodes: Node[] = [];
    for (let i = 0; i < 3; i++) {
      const name = `n${i + 1}`;
      const conf = join(dir, `${name}.conf`);
      await mkdir(join(dir, name), { recursive: true });
      await writeFile(
        conf,
        `server_name: ${name}\nlisten: 127.0.0.1:${ports[i]}\nhttp: 127.0.0.1:${ports[6 + i]}\n` +
          `jetstream {\n  store_dir: ${join(dir, name)}\n}\n` +
          `cluster {\n  name: phasemap\n  listen: 127.0.0.1:${ports[3 + i]}\n  routes: [\n${routes}\n  ]\n}\n`,
      );
      nodes.push({ name, conf, client: ports[i]!, http: ports[6 + i]!, proc: null });
    }
    const c = new Cluster(nodes);
    process.once('exit', () => c.stop());
    for (const n of nodes) c.run(n);
    await Promise.all(nodes.map((n) => c.healthy(n)));
    return c;
  }

  get url(): string {
    return this.nodes.map((n) => `nats://127.0.0.1:${n.client}`).join(',');
  }

  node(name: string): Node {
    return this.nodes.find((n) => n.name === name)!;
  }

  run(n: Node): void {
    n.proc = spawn(process.env.PHASEMAP_NATS_SERVER ?? 'nats-server', ['-c', n.conf], { stdio: 'ignore' });
  }

  /** Waits until the node answers /healthz with ok (JetStream up and current). */
  async healthy(n: Node, ms = 30_000): Promise<void> {
    await until(async () => {
      try {
        return (await fetch(`http://127.0.0.1:${n.http}/healthz`)).ok;
      } catch {
        return false;
      }
    }, ms, `${n.name} healthy`);
  }

  /** Names of the client connections of a node. */
  async clients(n: Node): Promise<string[]> {
    try {
      const j = (await (await fetch(`http://127.0.0.1:${n.http}/connz`)).json()) as { connections?: Array<{ name?: string }> };
      return (j.connections ?? []).map((c) => c.name ?? '');
    } catch {
      return [];
    }
  }

  kill(n: Node): void {
    n.proc?.kill('SIGKILL');
    n.proc = null;
  }

  stop(): void {
    for (const n of this.nodes) this.kill(n);
  }
}

const SWEEP = 'cluster';
const STEPS = 5000;
const spec = `
name: ${SWEEP}
problem: {name: poisson2d, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${STEPS}, log_every: 50, eval_every: 50, checkpoint_every: 1000}
diagnostics: {every: 100, snr_batches: 4}
grid:
  train.lr: [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.011, 0.012]
`;
const expectedSteps = [...Array(STEPS / 50).keys()].map((i) => i * 50).concat([STEPS - 1]);

/** The leader of a stream (`stream`) or of a consumer (`stream.consumer`). */
async function leaderOf(jsm: JetStreamManager, what: string): Promise<string | null> {
  const [stream, consumer] = what.split('/');
  const info = consumer ? await jsm.consumers.info(stream!, consumer) : await jsm.streams.info(stream!);
  return info.cluster?.leader ?? null;
}

/** Steps leaders down until every one of `what` is led by `target` (a new leader is drawn at random), for up to `ms`. */
async function gatherLeaders(nc: NatsConnection, jsm: JetStreamManager, what: string[], target: string, ms: number): Promise<Record<string, string | null>> {
  const end = Date.now() + ms;
  for (;;) {
    const leaders = Object.fromEntries(await Promise.all(what.map(async (w) => [w, await leaderOf(jsm, w).catch(() => null)] as const)));
    const off = what.filter((w) => leaders[w] !== target);
    if (!off.length || Date.now() > end) return leaders;
    for (const w of off) {
      const [stream, consumer] = w.split('/');
      const subject = consumer ? `$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${consumer}` : `$JS.API.STREAM.LEADER.STEPDOWN.${stream}`;
      await nc.request(subject, '', { timeout: 5000 }).catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 1500));
  }
}

test.serial('a 3-node cluster loses the node that leads the trial stream mid-sweep (SIGKILL, back with its store later): the sweep completes, every trial and every row once', async (t) => {
  t.timeout(170_000);
  const work = await tempDir('cluster');
  const cluster = await Cluster.start(join(work, 'nats'));
  const names = transportNames();
  const file = join(work, 'c.yaml');
  const out = join(work, 'out');
  await writeFile(file, spec);
  const ids = (await loadSweep(file)).trials.map((x) => x.trial_id);
  let nc: NatsConnection | null = null;
  try {
    const o = cli(['run', file, '--out', out, '--nats', cluster.url, '--slots', '0', '--replicas', '3'], { timeoutMs: 160_000 });
    const eo = stderrOf(o);
    let e1 = () => '';
    let e2 = () => '';
    const logs = () => `--- orchestrator:\n${eo().split('\n').filter((l) => !/progress:/.test(l)).join('\n')}\n--- w1:\n${e1()}\n--- w2:\n${e2()}`;
    const withLogs = (e: Error) => {
      throw new Error(`${e.message}\n${logs()}`);
    };

    nc = await connect({ servers: cluster.url.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    const jsm = await jetstreamManager(nc);
    // The node the orchestrator is connected to, once it has created the streams, the consumers and the bucket.
    const assets = [names.trialsStream, `${names.trialsStream}/${names.workerConsumer}`, names.outStream, `${names.outStream}/${names.collector(SWEEP)}`, `KV_${names.stateBucket}`];
    let home = '';
    await until(async () => {
      if (!(await Promise.all(assets.map((a) => leaderOf(jsm, a).then(Boolean, () => false)))).every(Boolean)) return false;
      for (const n of cluster.nodes) if ((await cluster.clients(n)).includes(`phasemap-run-${SWEEP}`)) home = n.name;
      return home !== '';
    }, 60_000, "the orchestrator's node and the streams").catch(withLogs);
    // Every stream replicated on all three nodes.
    for (const s of [names.trialsStream, names.outStream, `KV_${names.stateBucket}`]) t.is((await jsm.streams.info(s)).config.num_replicas, 3, s);
    // All the leaders gathered on the orchestrator's node, so that one kill takes the trial stream's
    // leader, the other streams' and consumers' leaders and the orchestrator's connection: once the
    // orchestrator has queued the trials (stepping a leader down is an election), before any worker runs.
    await until(() => eo().includes(`queued ${ids.length} trial(s)`), 60_000, 'the trials queued').catch(withLogs);
    const leaders = await gatherLeaders(nc, jsm, assets, home, 30_000);
    const w1 = cli(['worker', '--nats', cluster.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm', '--name', 'w1']);
    const w2 = cli(['worker', '--nats', cluster.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm', '--name', 'w2']);
    e1 = stderrOf(w1);
    e2 = stderrOf(w2);
    // A trial past step 300 (the workers' live progress messages).
    let step = 0;
    const progress = nc.subscribe(names.progress(SWEEP), { callback: (_e, m) => void (step = Math.max(step, m.json<ProgressMessage>().step)) });
    await until(() => step >= 300, 90_000, 'a trial past step 300').catch(withLogs);
    progress.unsubscribe();
    const victim = cluster.node((await leaderOf(jsm, names.trialsStream))!);
    const onVictim = await cluster.clients(victim);
    t.log(`killing ${victim.name} (leads the trial stream; leaders ${JSON.stringify(leaders)}; its clients ${JSON.stringify(onVictim)})`);
    const kv = await new Kvm(jetstream(nc)).open(names.stateBucket);
    const states = await Promise.all(ids.map(async (id) => (await kv.get(`${SWEEP}.${id}`))?.json<TrialState>()));
    t.true(states.filter((s) => s?.status === 'done').length < ids.length / 2, 'the kill comes early in the sweep');

    // Short requests to see the new leaders (a request to a dead leader times out).
    const jsmQuick = await jetstreamManager(nc, { timeout: 500, checkAPI: false });
    const killedAt = Date.now();
    cluster.kill(victim);
    // Each of the killed node's streams and consumers gets a new leader among the two others.
    const elected: Record<string, number> = {};
    await until(async () => {
      for (const a of assets) {
        if (elected[a] !== undefined) continue;
        const l = await leaderOf(jsmQuick, a).catch(() => null);
        if (l && l !== victim.name) elected[a] = (Date.now() - killedAt) / 1000;
      }
      return Object.keys(elected).length === assets.length;
    }, 60_000, 'new leaders', 100);
    t.log(`new leaders after (s): ${JSON.stringify(elected)}`);
    // Down a while (docs/deploy.md describes a minute; the failover is over long before), then back with its store.
    await new Promise((r) => setTimeout(r, Math.max(0, 15_000 - (Date.now() - killedAt))));
    cluster.run(victim);
    const restartedAt = Date.now();
    await cluster.healthy(victim, 60_000);
    t.log(`${victim.name} back and current ${((Date.now() - restartedAt) / 1000).toFixed(1)} s after its restart`);

    const r = await o;
    const log = logs();
    t.is(r.code, 0, log);
    const doneAt = Date.now();
    t.log(`sweep done ${((doneAt - killedAt) / 1000).toFixed(1)} s after the kill, ${((doneAt - restartedAt) / 1000).toFixed(1)} s after the restart`);
    t.true(doneAt - restartedAt > 5_000, 'the node came back while trials still ran');
    // The first trial the orchestrator recorded after the kill: how long its collector paused.
    const first = eo()
      .split('\n')
      .map((l) => /^(\S+Z) \[info\] trial t[0-9a-f]{16} .*\bdone \(attempt/.exec(l)?.[1])
      .map((ts) => (ts ? Date.parse(ts) : NaN))
      .find((ms) => ms > killedAt);
    t.log(`first trial recorded done ${first ? ((first - killedAt) / 1000).toFixed(1) : '-'} s after the kill`);
    // Clients of the dead node moved to another one at once and said so.
    if (onVictim.includes(`phasemap-run-${SWEEP}`)) {
      t.regex(eo(), new RegExp(`NATS: lost the connection to 127\\.0\\.0\\.1:${victim.client}; reconnecting`), log);
      t.regex(eo(), /NATS: reconnected to 127\.0\.0\.1:\d+ after \d+\.\d s/, log);
    }

    // Every trial done once; the completed attempt holds every step once; no row twice.
    const rows = await duck(`
      SELECT t.trial_id, t.status, t.attempts,
        (SELECT list(m.step ORDER BY m.step) FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
          WHERE m.trial_id = t.trial_id AND m.attempt = t.attempts) AS steps,
        (SELECT count(DISTINCT m.attempt) FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
          WHERE m.trial_id = t.trial_id AND m.step = ${STEPS - 1}) AS finished_attempts
      FROM '${out}/trials.parquet' t ORDER BY t.trial_id`);
    t.deepEqual(rows.map((x) => x.trial_id).sort(), [...ids].sort());
    for (const x of rows) {
      t.is(x.status, 'done', `trial ${x.trial_id as string}`);
      t.deepEqual((x.steps as { items: number[] }).items, expectedSteps, `trial ${x.trial_id as string} attempt ${x.attempts as number}: every step once`);
      t.is(Number(x.finished_attempts), 1, `trial ${x.trial_id as string} ran to completion once`);
    }
    const dups = await duck(`
      SELECT count(*) AS n FROM (SELECT trial_id, attempt, step, count(*) AS c
        FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL HAVING c > 1)`);
    t.is(Number(dups[0]!.n), 0, 'no (trial, attempt, step) row twice');
    t.log(`attempts: ${rows.map((x) => x.attempts).join(' ')}`);
    // Everything was delivered to the collector. A message whose ack was on its way when the node
    // died is delivered again after the collector's ack wait (and dropped: its rows are on disk); when
    // the sweep ends before that, it waits in the output stream (docs/deploy.md).
    const si = await jsm.streams.info(names.outStream, { subjects_filter: '>' });
    const ci = await jsm.consumers.info(names.outStream, names.collector(SWEEP));
    t.is(ci.num_pending, 0, 'every message of the output stream delivered to the collector');
    t.true(si.state.messages <= ci.num_ack_pending, `left in ${names.outStream}: only messages delivered whose ack was lost (${JSON.stringify(si.state.subjects)}, ${ci.num_ack_pending} unacked)`);
    t.log(`left in ${names.outStream}: ${si.state.messages} message(s) ${JSON.stringify(si.state.subjects ?? {})}`);
    // The restarted node holds its copies again.
    await until(async () => ((await jsm.streams.info(names.trialsStream)).cluster?.replicas ?? []).every((p) => p.current), 30_000, 'all trial-stream replicas current');
  } finally {
    await nc?.close().catch(() => undefined);
    killStarted();
    cluster.stop();
  }
});
