/**
 * The embedded default: a private nats-server (from PATH) with JetStream on, bound to loopback on a
 * free port, its store inside the sweep directory. Stopped when the run ends.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { connect } from '@nats-io/transport-node';

export interface EmbeddedNats {
  url: string;
  stop(): Promise<void>;
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

/**
 * Runs the server under a POSIX-sh guard that holds the read end of a pipe from this process: when
 * this process dies — even by SIGKILL — the pipe closes and the guard stops the server, so a killed
 * `phasemap run` never leaves its embedded server (and the store in DIR) held by an orphan.
 */
const GUARD = 'exec 3<&0; "$0" "$@" </dev/null & p=$!; (read _ <&3; kill -TERM $p 2>/dev/null) & r=$!; ' +
  "trap 'kill -TERM $p 2>/dev/null' TERM INT; while kill -0 $p 2>/dev/null; do wait $p; done; kill $r 2>/dev/null; exit 0";

/**
 * Starts nats-server with `-js -a 127.0.0.1 -p <port> -sd <storeDir>` and waits until it accepts
 * clients. The server stops when `stop()` is called or when this process dies (see GUARD).
 * @param storeDir JetStream store directory (created).
 * @param opts.port a fixed port (default: a free one), e.g. to restart a server on the same address.
 * @throws NatsServerMissing when the binary is not found; Error when it exits or does not answer within 15 s.
 */
export async function startEmbeddedNats(storeDir: string, bin = process.env.PHASEMAP_NATS_SERVER ?? 'nats-server', opts: { port?: number } = {}): Promise<EmbeddedNats> {
  await mkdir(storeDir, { recursive: true });
  const exe = findExecutable(bin);
  if (!exe) throw new NatsServerMissing(bin);
  const port = opts.port ?? (await freePort());
  const url = `nats://127.0.0.1:${port}`;
  let stderr = '';
  const child: ChildProcess = spawn('/bin/sh', ['-c', GUARD, exe, '-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir, '--server_name', `phasemap-embedded-${port}`], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<Error>((resolve) => {
    child.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ENOENT' ? new NatsServerMissing(bin) : e));
    child.once('exit', (code, sig) => resolve(new Error(`nats-server exited (code ${code}, signal ${sig}) before it was ready:\n${stderr}`)));
  });
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
      child.kill('SIGKILL');
      throw new Error(`nats-server did not accept clients on ${url} within 15 s:\n${stderr}`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
  // A run that ends through process.exit (e.g. a closed stdout) must not leave its server behind.
  const onExit = () => child.kill('SIGTERM');
  process.once('exit', onExit);
  return {
    url,
    async stop() {
      process.off('exit', onExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise<void>((res) => child.once('exit', () => res()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    },
  };
}

/** The store directory of the embedded server inside DIR. */
export const embeddedStoreDir = (dir: string) => join(dir, '.nats');
