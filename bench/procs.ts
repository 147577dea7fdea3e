/** `phasemap` CLI processes for the dispatch and scaling benchmarks, with their log lines timestamped on arrival. */
import { spawn, type ChildProcess } from 'node:child_process';
import { cliPath } from './lib.js';

export interface CliProc {
  child: ChildProcess;
  /** Every stderr/stdout line with performance.now() at arrival. */
  lines: Array<{ t: number; line: string }>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  /** Resolves at the first line matching `re` (performance.now() of it). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<number>;
}

export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): CliProc {
  const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const lines: CliProc['lines'] = [];
  const waiters: Array<{ re: RegExp; resolve: (t: number) => void }> = [];
  const onData = (buf: { s: string }) => (d: Buffer) => {
    buf.s += d.toString();
    let i: number;
    while ((i = buf.s.indexOf('\n')) >= 0) {
      const line = buf.s.slice(0, i);
      buf.s = buf.s.slice(i + 1);
      const t = performance.now();
      lines.push({ t, line });
      for (let k = 0; k < waiters.length; k++) if (waiters[k]!.re.test(line)) waiters.splice(k--, 1)[0]!.resolve(t);
    }
  };
  child.stdout!.on('data', onData({ s: '' }));
  child.stderr!.on('data', onData({ s: '' }));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return {
    child,
    lines,
    exited,
    waitFor(re, timeoutMs = 120_000) {
      const hit = lines.find((l) => re.test(l.line));
      if (hit) return Promise.resolve(hit.t);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs / 1000} s:\n${lines.slice(-5).map((l) => l.line).join('\n')}`)), timeoutMs);
        void exited.then((code) => {
          clearTimeout(timer);
          reject(new Error(`phasemap ${args[0]} exited (code ${code}) before a line matching ${re}:\n${lines.slice(-5).map((l) => l.line).join('\n')}`));
        });
        waiters.push({
          re,
          resolve: (t) => {
            clearTimeout(timer);
            resolve(t);
          },
        });
      });
    },
  };
}

/** Stops a CLI process (SIGTERM, then SIGKILL after `graceMs`) and waits for it. */
export async function stopCli(p: CliProc, graceMs = 10_000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await p.exited;
  clearTimeout(t);
}
