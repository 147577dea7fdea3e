/**
 * The embedded default: a private nats-server (from PATH) with JetStream on, bound to loopback on a
 * free port, its store and its log inside the sweep directory. Stopped when the run ends, or when this
 * process dies (however), with SIGKILL if SIGTERM is not enough.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { connect } from '@nats-io/transport-node';

export interface EmbeddedNats {
  url: string;
  /** The nats-server process id. */
  pid: number;
  /** Its log file: `server.log` in the store directory. */
  logFile: string;
  /** Settles when the server has exited (its guard, after it): its exit code or signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /**
   * Stops the server: SIGTERM, then SIGKILL when it has not exited after `graceMs` (default
   * NATS_STOP_GRACE_MS). Returns within about `graceMs` + 3 s whatever state the server is in.
   */
  stop(graceMs?: number): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Error for a missing nats-server binary, with how to install it. */
export class NatsServerMissing extends Error {
  constructor(bin: string) {
    super(
      `nats-server not found (${bin.includes('/') ? `no executable at '${bin}'` : `looked for '${bin}' on PATH`}). phasemap needs nats-server >= 2.9 with JetStream for its embedded default.\n` +
        `  Debian/Ubuntu: sudo apt-get install nats-server\n  macOS: brew install nats-server\n` +
        `  or start your own server and pass --nats nats://HOST:4222`,
    );
    this.name = 'NatsServerMissing';
  }
}

/** The executable `bin` names (a path, or a name looked up on PATH), or null. */
function findExecutable(bin: string): string | null {
  const ok = (p: string) => {
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (bin.includes('/')) return ok(bin) ? bin : null;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir && ok(join(dir, bin))) return join(dir, bin);
  return null;
}

/** How long a stopped server gets after SIGTERM before SIGKILL (a server wedged by a full disk ignores SIGTERM). */
export const NATS_STOP_GRACE_MS = 3000;

/**
 * Runs the server under a POSIX-sh guard, in a session of its own (a Ctrl-C at the terminal reaches
 * `phasemap run` only, which then stops the server last, after handing its trials back). The guard
 * prints the server's pid, and holds the read end of a pipe from this process: when this process dies —
 * even by SIGKILL — the pipe closes and the guard stops the server: SIGTERM, then SIGKILL after the
 * grace period, so that a killed or crashed `phasemap run` never leaves its embedded server (and the
 * store in DIR) held by an orphan, not even a server that ignores SIGTERM.
 */
const GUARD = `exec 3<&0; "$0" "$@" </dev/null >/dev/null & p=$!; echo $p; ` +
  `(read _ <&3; kill -TERM $p 2>/dev/null; sleep ${NATS_STOP_GRACE_MS / 1000}; kill -KILL $p 2>/dev/null) & r=$!; ` +
  "trap 'kill -TERM $p 2>/dev/null' TERM INT; s=0; while kill -0 $p 2>/dev/null; do wait $p; s=$?; done; kill $r 2>/dev/null; exit $s";

/** The last `n` lines of a file ('' when it cannot be read). */
function tail(path: string, n = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

/**
 * Starts nats-server with `-js -a 127.0.0.1 -p <port> -sd <storeDir> -l <storeDir>/server.log` and
 * waits until it accepts clients. The server stops when `stop()` is called or when this process dies
 * (see GUARD).
 * @param storeDir JetStream store directory (created); the server's log is `server.log` in it.
 * @param opts.port a fixed port (default: a free one), e.g. to restart a server on the same address.
 * @param opts.maxFileStore cap of the JetStream file store in bytes (`jetstream { max_file_store }` in
 *   `<storeDir>/server.conf`, passed with `-c`); default: nats-server's own (75 % of the free space).
 * @throws NatsServerMissing when the binary is not found; Error when it exits or does not answer within 15 s.
 */
export async function startEmbeddedNats(storeDir: string, bin = process.env.PHASEMAP_NATS_SERVER ?? 'nats-server', opts: { port?: number; maxFileStore?: number } = {}): Promise<EmbeddedNats> {
  await mkdir(storeDir, { recursive: true });
  const exe = findExecutable(bin);
  if (!exe) throw new NatsServerMissing(bin);
  const port = opts.port ?? (await freePort());
  const url = `nats://127.0.0.1:${port}`;
  const logFile = join(storeDir, 'server.log');
  const args = ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir, '--server_name', `phasemap-embedded-${port}`, '-l', logFile];
  if (opts.maxFileStore !== undefined) {
    const conf = join(storeDir, 'server.conf');
    await writeFile(conf, `# written by phasemap run: the JetStream store's cap (orchestrator/disk-space.ts embeddedStoreLimit)\njetstream {\n  max_file_store: ${Math.floor(opts.maxFileStore)}\n}\n`);
    args.unshift('-c', conf);
  }
  let stderr = '';
  const child: ChildProcess = spawn('/bin/sh', ['-c', GUARD, exe, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  let out = '';
  const pid = new Promise<number>((resolve) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const why = () => [stderr.trim(), tail(logFile)].filter(Boolean).join('\n');
  const exited = new Promise<Error>((resolve) => {
    child.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ENOENT' ? new NatsServerMissing(bin) : e));
    void exit.then(({ code, signal }) => resolve(new Error(`nats-server exited (code ${code}, signal ${signal}) before it was ready:\n${why()}`)));
  });
  const serverPid = await Promise.race([pid, exited]);
  if (serverPid instanceof Error) throw serverPid;
  const kill = (sig: NodeJS.Signals) => {
    try {
      process.kill(serverPid, sig);
    } catch {
      /* gone */
    }
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    const r = await Promise.race([
      exited,
      connect({ servers: url, reconnect: false, timeout: 500 }).then(
        async (nc) => {
          await nc.close();
          return true as const;
        },
        () => false as const,
      ),
    ]);
    if (r instanceof Error) throw r;
    if (r) break;
    if (Date.now() > deadline) {
      kill('SIGKILL');
      throw new Error(`nats-server did not accept clients on ${url} within 15 s:\n${why()}`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  // A run that ends through process.exit (e.g. a second Ctrl-C, a closed stdout) or an uncaught error
  // must not leave its server behind: SIGTERM now; the guard sends SIGKILL after the grace period
  // (this process is gone by then, and the pipe it watches closed).
  const onExit = () => {
    kill('SIGTERM');
    child.kill('SIGTERM');
  };
  process.once('exit', onExit);
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const waitExit = (ms: number) =>
    new Promise<boolean>((res) => {
      if (gone()) return res(true);
      const t = setTimeout(() => res(false), ms);
      void exit.then(() => {
        clearTimeout(t);
        res(true);
      });
    });
  return {
    url,
    pid: serverPid,
    logFile,
    exited: exit,
    async stop(graceMs = NATS_STOP_GRACE_MS) {
      process.off('exit', onExit);
      if (gone()) return;
      kill('SIGTERM');
      if (await waitExit(graceMs)) return;
      // Stuck (e.g. JetStream wedged by a full disk), or stopped (SIGSTOP): SIGKILL works on both.
      kill('SIGKILL');
      if (await waitExit(2000)) return;
      child.kill('SIGKILL');
      await waitExit(1000);
    },
  };
}

/** The store directory of the embedded server inside DIR. */
export const embeddedStoreDir = (dir: string) => join(dir, '.nats');
