/**
 * NATS credentials and TLS (orchestrator/nats-connect.ts) against real nats-server processes started
 * with config files: user/password, token, nkey, TLS with a private CA (openssl), .creds in operator
 * mode (JWTs from @nats-io/jwt, resolver MEMORY). The CLI never prints a password.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { createAccount, createOperator, createUser as createJwtUser, encodeAccount, encodeOperator, encodeUser, fmtCreds } from '@nats-io/jwt';
import { createUser } from '@nats-io/nkeys';
import test from 'ava';
import {
  connectNats,
  NatsConfigError,
  NatsConnectError,
  natsAuthForUrl,
  natsAuthFromEnv,
  natsAuthFromOptions,
  natsConnectOptions,
  redactUrl,
  type NatsAuth,
} from '../orchestrator/nats-connect.js';
import { freePort, runCli, tempDir, until, type CliResult } from './helpers.js';
import { TINY_SPEC } from './spec-helpers.js';

const SECRET = 'S3cr3t-p@ss-Zq9';
const TOKEN = 'tok-9f8e7d6c5b4a-secret';

interface Server {
  port: number;
  url: string;
  stop(): Promise<void>;
}

/** nats-server -c <conf> (the text gets `port`/`host` prepended); ready once it sends INFO on a plain TCP socket. */
async function startServer(dir: string, conf: string): Promise<Server> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const file = join(dir, 'server.conf');
  await writeFile(file, `port: ${port}\nhost: 127.0.0.1\n${conf}\n`);
  let stderr = '';
  const child: ChildProcess = spawn('nats-server', ['-c', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const end = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nats-server exited (${child.exitCode}):\n${stderr}`);
    const ok = await new Promise<boolean>((res) => {
      const s = tcpConnect(port, '127.0.0.1');
      s.once('data', (d) => {
        s.destroy();
        res(d.toString().startsWith('INFO'));
      });
      s.once('error', () => res(false));
    });
    if (ok) break;
    if (Date.now() > end) {
      child.kill('SIGKILL');
      throw new Error(`nats-server not ready:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const done = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    },
  };
}

/** Connects, round-trips one request through the server, closes. */
async function roundTrip(url: string, auth?: NatsAuth): Promise<void> {
  const nc = await connectNats(url, 'auth-test', auth);
  try {
    const sub = nc.subscribe('echo', { callback: (_e, m) => void m.respond(m.data) });
    const r = await nc.request('echo', 'hi', { timeout: 2000 });
    if (r.string() !== 'hi') throw new Error('bad echo');
    sub.unsubscribe();
  } finally {
    await nc.close();
  }
}

async function connectError(url: string, auth?: NatsAuth): Promise<Error> {
  try {
    const nc = await connectNats(url, 'auth-test', auth);
    await nc.close();
  } catch (e) {
    return e as Error;
  }
  throw new Error('connected, expected a failure');
}

/** A CLI environment without any PHASEMAP_NATS_* from the developer's shell. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PHASEMAP_NATS_')) env[k] = v;
  return { ...env, ...extra };
}

const noEnv = {} as NodeJS.ProcessEnv;

// ---- Pure parts ---------------------------------------------------------------------------------

test('redactUrl hides passwords and tokens, also in lists, and leaves plain URLs alone', (t) => {
  t.is(redactUrl('nats://user:pass@host:4222'), 'nats://user:***@host:4222');
  t.is(redactUrl('nats://TOKEN@host:4222'), 'nats://***@host:4222');
  t.is(redactUrl('nats://u:p@ss@host:4222'), 'nats://u:***@host:4222');
  t.is(redactUrl('u:p@host:4222,nats://a:b@h2,tls://h3:4443'), 'u:***@host:4222,nats://a:***@h2,tls://h3:4443');
  t.is(redactUrl('nats://127.0.0.1:4222'), 'nats://127.0.0.1:4222');
  t.is(redactUrl('nats://u:p%40x@[::1]:4222'), 'nats://u:***@[::1]:4222');
});

test('URL credentials become user/pass or token and leave the server list', (t) => {
  const o = natsConnectOptions('nats://alice:p%40ss@h1:4222,nats://alice:p%40ss@h2:4222', 'n');
  t.deepEqual(o.servers, ['nats://h1:4222', 'nats://h2:4222']);
  t.is(o.user, 'alice');
  t.is(o.pass, 'p@ss');
  t.is(o.maxReconnectAttempts, -1);
  t.is(o.reconnectTimeWait, 500);
  const k = natsConnectOptions('nats://tok123@h1:4222', 'n');
  t.is(k.token, 'tok123');
  t.deepEqual(k.servers, ['nats://h1:4222']);
  t.deepEqual(natsConnectOptions('tls://h1:4443', 'n').tls, {});
  const diff = t.throws(() => natsConnectOptions('nats://a:x@h1,nats://a:y@h2', 'n'), { instanceOf: NatsConfigError });
  t.false(diff.message.includes(':x@') || diff.message.includes(':y@'), diff.message);
});

test('flags win over the environment; secrets come from the environment or files; bad combinations and files are clear errors', async (t) => {
  const dir = await tempDir('nats-auth-opts');
  const pw = join(dir, 'pw');
  await writeFile(pw, `${SECRET}\n`);
  const env = { PHASEMAP_NATS_USER: 'envuser', PHASEMAP_NATS_PASSWORD: 'envpass', PHASEMAP_NATS_TOKEN: '', PHASEMAP_NATS_CA: '/env/ca.pem' } as NodeJS.ProcessEnv;
  const fromEnv = natsAuthFromEnv(env);
  t.like(fromEnv, { user: 'envuser', pass: 'envpass', tlsCa: '/env/ca.pem' });
  t.is(fromEnv.token, undefined, 'empty variables are unset');

  // --nats-user with the password from the environment.
  t.like(natsAuthFromOptions({ natsUser: 'flaguser' }, env), { user: 'flaguser', pass: 'envpass', tlsCa: '/env/ca.pem' });
  // The password file replaces the variable; the trailing newline is dropped.
  t.like(natsAuthFromOptions({ natsPasswordFile: pw }, env), { user: 'envuser', pass: SECRET });
  // A credential of another kind by flag drops the environment's user/password.
  const creds = natsAuthFromOptions({ natsCreds: '/x.creds', tlsCa: '/flag/ca.pem' }, env);
  t.like(creds, { credsFile: '/x.creds', tlsCa: '/flag/ca.pem', user: undefined, pass: undefined });

  // Two kinds at once (both from the environment): refused, naming both, showing neither secret.
  const both = t.throws(() => natsConnectOptions('nats://h:4222', 'n', natsAuthFromEnv({ PHASEMAP_NATS_USER: 'u', PHASEMAP_NATS_PASSWORD: SECRET, PHASEMAP_NATS_TOKEN: TOKEN })), { instanceOf: NatsConfigError });
  t.regex(both.message, /conflicting NATS credentials: PHASEMAP_NATS_USER \+ PHASEMAP_NATS_PASSWORD and PHASEMAP_NATS_TOKEN/);
  t.false(both.message.includes(SECRET) || both.message.includes(TOKEN));
  // URL credentials and a flag.
  t.throws(() => natsConnectOptions('nats://u:p@h:4222', 'n', natsAuthFromOptions({ natsCreds: '/x.creds' }, noEnv)), { instanceOf: NatsConfigError, message: /the credentials in --nats nats:\/\/u:\*\*\*@h:4222 and --nats-creds/ });
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromOptions({ natsUser: 'u' }, noEnv)), { instanceOf: NatsConfigError, message: /--nats-user given without a password: set PHASEMAP_NATS_PASSWORD or --nats-password-file/ });
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromEnv({ PHASEMAP_NATS_PASSWORD: SECRET })), { instanceOf: NatsConfigError, message: /PHASEMAP_NATS_PASSWORD given without a user/ });
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromOptions({ tlsCert: pw }, noEnv)), { instanceOf: NatsConfigError, message: /--tls-cert given without --tls-key/ });

  // Missing and malformed files: the flag or variable, the path, the problem.
  t.throws(() => natsAuthFromOptions({ natsPasswordFile: join(dir, 'nope') }, noEnv), { instanceOf: NatsConfigError, message: `--nats-password-file ${join(dir, 'nope')}: cannot read it (no such file)` });
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromOptions({ natsCreds: join(dir, 'missing.creds') }, noEnv)), { instanceOf: NatsConfigError, message: `--nats-creds ${join(dir, 'missing.creds')}: cannot read it (no such file)` });
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromEnv({ PHASEMAP_NATS_NKEY: dir })), { instanceOf: NatsConfigError, message: `PHASEMAP_NATS_NKEY ${dir}: cannot read it (is a directory)` });
  const seedErr = t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromOptions({ natsNkey: pw }, noEnv)), { instanceOf: NatsConfigError, message: /--nats-nkey .*: no user nkey seed in it/ });
  t.false(seedErr.message.includes(SECRET));
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromEnv({ PHASEMAP_NATS_CREDS: pw })), { instanceOf: NatsConfigError, message: /PHASEMAP_NATS_CREDS .*: not a NATS \.creds file/ });
  t.throws(() => natsConnectOptions('nats://h', 'n', natsAuthFromOptions({ tlsCa: pw }, noEnv)), { instanceOf: NatsConfigError, message: /--tls-ca .*: not a PEM file/ });

  // `run` without --nats: the environment is ignored, flags are refused.
  t.is(natsAuthForUrl(undefined, {}, env), undefined);
  t.throws(() => natsAuthForUrl(undefined, { natsUser: 'u', tlsCa: '/ca' }, noEnv), { instanceOf: NatsConfigError, message: /--nats-user, --tls-ca: only with --nats URL/ });
});

// ---- Real servers -------------------------------------------------------------------------------

test('user/password: from the environment, from flags, in the URL; a wrong password fails clearly without showing it', async (t) => {
  const dir = await tempDir('nats-auth-user');
  const srv = await startServer(dir, `authorization { users = [ { user: alice, password: "${SECRET}" } ] }`);
  try {
    await roundTrip(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_USER: 'alice', PHASEMAP_NATS_PASSWORD: SECRET }));
    const pw = join(dir, 'pw');
    await writeFile(pw, SECRET);
    await roundTrip(srv.url, natsAuthFromOptions({ natsUser: 'alice', natsPasswordFile: pw }, noEnv));
    await roundTrip(`nats://alice:${encodeURIComponent(SECRET)}@127.0.0.1:${srv.port}`);
    t.pass();

    const wrong = await connectError(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_USER: 'alice', PHASEMAP_NATS_PASSWORD: `${SECRET}-wrong` }));
    t.true(wrong instanceof NatsConnectError);
    t.is((wrong as NatsConnectError).reason, 'auth');
    t.is(wrong.message, `--nats ${srv.url}: authorization failed (Authorization Violation); check PHASEMAP_NATS_USER and PHASEMAP_NATS_PASSWORD`);
    const inUrl = await connectError(`nats://alice:wrong-${SECRET}@127.0.0.1:${srv.port}`);
    t.is(inUrl.message, `--nats nats://alice:***@127.0.0.1:${srv.port}: authorization failed (Authorization Violation); check the user and password (or token) in the --nats URL`);
    const none = await connectError(srv.url);
    t.regex(none.message, /authorization failed .*the server wants credentials: give --nats-user with PHASEMAP_NATS_PASSWORD/);
    for (const e of [wrong, inUrl, none]) t.false(e.message.includes(SECRET) || (e.stack ?? '').includes(SECRET));
  } finally {
    await srv.stop();
  }
});

test('token: from the environment, from a file, in the URL; a wrong token is an authorization error', async (t) => {
  const dir = await tempDir('nats-auth-token');
  const srv = await startServer(dir, `authorization { token: "${TOKEN}" }`);
  try {
    await roundTrip(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_TOKEN: TOKEN }));
    const f = join(dir, 'token');
    await writeFile(f, `${TOKEN}\n`);
    await roundTrip(srv.url, natsAuthFromOptions({ natsTokenFile: f }, noEnv));
    await roundTrip(`nats://${TOKEN}@127.0.0.1:${srv.port}`);
    const e = await connectError(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_TOKEN: `${TOKEN}x` }));
    t.is((e as NatsConnectError).reason, 'auth');
    t.regex(e.message, /authorization failed .*check PHASEMAP_NATS_TOKEN$/);
    t.false(e.message.includes(TOKEN));
  } finally {
    await srv.stop();
  }
});

test('nkey: a user nkey seed file signs the server nonce; another seed is refused', async (t) => {
  const dir = await tempDir('nats-auth-nkey');
  const kp = createUser();
  const seedFile = join(dir, 'user.nk');
  await writeFile(seedFile, `${new TextDecoder().decode(kp.getSeed())}\n`);
  const srv = await startServer(dir, `authorization { users = [ { nkey: ${kp.getPublicKey()} } ] }`);
  try {
    await roundTrip(srv.url, natsAuthFromOptions({ natsNkey: seedFile }, noEnv));
    await roundTrip(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_NKEY: seedFile }));
    const other = join(dir, 'other.nk');
    await writeFile(other, new TextDecoder().decode(createUser().getSeed()));
    const e = await connectError(srv.url, natsAuthFromOptions({ natsNkey: other }, noEnv));
    t.is((e as NatsConnectError).reason, 'auth');
    t.regex(e.message, /check --nats-nkey \(is its public key among the server's users\?\)/);
    t.false(e.message.includes('SU'), 'no seed in the message');
  } finally {
    await srv.stop();
  }
});

/** A CA and a server certificate for 127.0.0.1/localhost, and a client certificate, made with openssl. */
function makeCerts(dir: string): { ca: string; cert: string; key: string; clientCert: string; clientKey: string } {
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=phasemap test CA');
  const issue = (name: string, cn: string, ext: string) => {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
    execFileSync('sh', ['-c', `printf '%s\\n' "${ext}" > ${name}.ext`], { cwd: dir });
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  };
  issue('server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  issue('client', 'phasemap-worker', 'extendedKeyUsage=clientAuth');
  return { ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

test('TLS: with --tls-ca the client verifies the server; without it the connection fails as a TLS error; client certificates', async (t) => {
  const dir = await tempDir('nats-auth-tls');
  const c = makeCerts(dir);
  const srv = await startServer(dir, `tls { cert_file: "${c.cert}", key_file: "${c.key}" }`);
  const mtls = await startServer(join(dir, 'mtls'), `tls { cert_file: "${c.cert}", key_file: "${c.key}", ca_file: "${c.ca}", verify: true }`);
  try {
    await roundTrip(srv.url, natsAuthFromOptions({ tlsCa: c.ca }, noEnv));
    await roundTrip(`tls://127.0.0.1:${srv.port}`, natsAuthFromEnv({ PHASEMAP_NATS_CA: c.ca }));
    const e = await connectError(srv.url);
    t.is((e as NatsConnectError).reason, 'tls', e.message);
    t.regex(e.message, /^--nats nats:\/\/127\.0\.0\.1:\d+: TLS failed \(.*\); check --tls-ca\/PHASEMAP_NATS_CA/);

    // A server that verifies clients: with a client certificate signed by its CA. (Without one, nats.js
    // only times out after 20 s under TLS 1.3: not waited for here.)
    await roundTrip(mtls.url, natsAuthFromOptions({ tlsCa: c.ca, tlsCert: c.clientCert, tlsKey: c.clientKey }, noEnv));

    // TLS asked for, the server has none.
    const plain = await startServer(join(dir, 'plain'), '');
    try {
      const p = await connectError(plain.url, natsAuthFromOptions({ tlsCa: c.ca }, noEnv));
      t.is((p as NatsConnectError).reason, 'tls', p.message);
      t.regex(p.message, /the server offers no TLS/);
    } finally {
      await plain.stop();
    }
  } finally {
    await srv.stop();
    await mtls.stop();
  }
});

test('.creds in operator mode (resolver MEMORY): the user JWT + seed connect and reach JetStream; a user of an unknown account is refused', async (t) => {
  const dir = await tempDir('nats-auth-creds');
  const operator = createOperator();
  const account = createAccount();
  const sys = createAccount();
  const user = createJwtUser();
  const unlimited = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  await writeFile(join(dir, 'op.jwt'), await encodeOperator('phasemap-test-op', operator, { system_account: sys.getPublicKey() }));
  const accJwt = await encodeAccount('phasemap', account, { limits: { ...unlimited, mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 } }, { signer: operator });
  const sysJwt = await encodeAccount('SYS', sys, { limits: unlimited }, { signer: operator });
  const credsFile = join(dir, 'user.creds');
  await writeFile(credsFile, fmtCreds(await encodeUser('worker', user, account), user));
  const srv = await startServer(
    dir,
    `operator: "${join(dir, 'op.jwt')}"\nsystem_account: ${sys.getPublicKey()}\nresolver: MEMORY\n` +
      `resolver_preload: {\n  ${account.getPublicKey()}: ${accJwt}\n  ${sys.getPublicKey()}: ${sysJwt}\n}\n` +
      `jetstream { store_dir: "${join(dir, 'js')}" }`,
  );
  try {
    const nc = await connectNats(srv.url, 'creds-test', natsAuthFromOptions({ natsCreds: credsFile }, noEnv));
    try {
      const info = await (await jetstreamManager(nc)).getAccountInfo();
      t.is(info.limits.max_streams, -1);
    } finally {
      await nc.close();
    }
    await roundTrip(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_CREDS: credsFile }));

    // A user signed by an account the server does not know.
    const stranger = createJwtUser();
    const strangerCreds = join(dir, 'stranger.creds');
    await writeFile(strangerCreds, fmtCreds(await encodeUser('x', stranger, createAccount()), stranger));
    const e = await connectError(srv.url, natsAuthFromEnv({ PHASEMAP_NATS_CREDS: strangerCreds }));
    t.is((e as NatsConnectError).reason, 'auth', e.message);
    t.regex(e.message, /check PHASEMAP_NATS_CREDS \(is the user JWT expired/);
    const none = await connectError(srv.url);
    t.is((none as NatsConnectError).reason, 'auth');
  } finally {
    await srv.stop();
  }
});

test('a .creds file becomes a JWT authenticator that re-reads the file (a rotated file is picked up, a broken one ignored)', async (t) => {
  const dir = await tempDir('nats-auth-rotate');
  const account = createAccount();
  const creds = async (name: string) => {
    const u = createJwtUser();
    const jwt = await encodeUser(name, u, account);
    return { jwt, pub: u.getPublicKey(), text: fmtCreds(jwt, u) };
  };
  const a = await creds('a');
  const b = await creds('b');
  const file = join(dir, 'u.creds');
  // CRLF line ends (a file edited on Windows) are fine.
  await writeFile(file, new TextDecoder().decode(a.text).replace(/\n/g, '\r\n'));
  const o = natsConnectOptions('nats://h:4222', 'n', natsAuthFromOptions({ natsCreds: file }, noEnv));
  const auth = o.authenticator as (nonce?: string) => { jwt: string; nkey: string; sig: string };
  t.like(auth('nonce'), { jwt: a.jwt, nkey: a.pub });
  t.true(auth('nonce').sig.length > 0);
  await writeFile(file, b.text);
  t.like(auth('nonce'), { jwt: b.jwt, nkey: b.pub });
  await writeFile(file, 'garbage');
  t.like(auth('nonce'), { jwt: b.jwt, nkey: b.pub });
});

// ---- The CLI never prints a secret --------------------------------------------------------------

function live(p: Promise<CliResult> & { child: ChildProcess }): () => string {
  let text = '';
  p.child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  p.child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  return () => text;
}

test.serial('CLI: run and worker with credentials (URL, flag + env, wrong ones) never print the password', async (t) => {
  const dir = await tempDir('nats-auth-cli');
  const srv = await startServer(dir, `authorization { users = [ { user: alice, password: "${SECRET}" } ] }\njetstream { store_dir: "${join(dir, 'js')}" }`);
  const good = `nats://alice:${encodeURIComponent(SECRET)}@127.0.0.1:${srv.port}`;
  const bad = `nats://alice:${encodeURIComponent(`${SECRET}-no`)}@127.0.0.1:${srv.port}`;
  const seen: string[] = [];
  const check = (what: string, text: string) => {
    seen.push(text);
    t.false(text.includes(SECRET), `${what} printed the password:\n${text}`);
    t.false(text.includes(encodeURIComponent(SECRET)), `${what} printed the encoded password`);
  };
  try {
    // Wrong password in the URL: worker and run exit 3 with a clear message.
    const w = await runCli(['worker', '--nats', bad, '--slots', '1', '--backend', 'wasm'], { env: cleanEnv(), timeoutMs: 60_000 });
    check('worker (wrong password)', w.stdout + w.stderr);
    t.is(w.code, 3, w.stderr);
    t.regex(w.stderr, new RegExp(`--nats nats://alice:\\*\\*\\*@127\\.0\\.0\\.1:${srv.port}: authorization failed \\(Authorization Violation\\); check the user and password`));
    const spec = join(dir, 'tiny.yaml');
    await writeFile(spec, TINY_SPEC);
    const r = await runCli(['run', spec, '--out', join(dir, 'out-bad'), '--nats', srv.url, '--nats-user', 'alice', '--slots', '0'], {
      env: cleanEnv({ PHASEMAP_NATS_PASSWORD: `${SECRET}-no` }),
      timeoutMs: 60_000,
    });
    check('run (wrong password)', r.stdout + r.stderr);
    t.is(r.code, 3, r.stderr);
    t.regex(r.stderr, /authorization failed \(Authorization Violation\); check --nats-user and PHASEMAP_NATS_PASSWORD/);
    // Conflicting settings are a usage error (exit 2).
    const c = await runCli(['worker', '--nats', good, '--nats-user', 'alice'], { env: cleanEnv(), timeoutMs: 60_000 });
    check('worker (conflict)', c.stdout + c.stderr);
    t.is(c.code, 2, c.stderr);
    t.regex(c.stderr, /conflicting NATS credentials: the credentials in --nats nats:\/\/alice:\*\*\*@.* and --nats-user/);

    // Right credentials: a worker (password in the URL) runs the trial of an orchestrator (--nats-user + env).
    const worker = runCli(['worker', '--nats', good, '--slots', '1', '--backend', 'wasm', '--name', 'wa'], { env: cleanEnv(), timeoutMs: 180_000 });
    const wOut = live(worker);
    await until(() => /waiting for an orchestrator|pulling trials/.test(wOut()), 60_000, 'the worker to connect', 100);
    const ok = await runCli(['run', spec, '--out', join(dir, 'out'), '--nats', srv.url, '--nats-user', 'alice', '--slots', '0'], {
      env: cleanEnv({ PHASEMAP_NATS_PASSWORD: SECRET }),
      timeoutMs: 180_000,
    });
    check('run (right password)', ok.stdout + ok.stderr);
    t.is(ok.code, 0, ok.stderr);
    t.regex(ok.stderr, new RegExp(`queued 1 trial\\(s\\) on nats://127\\.0\\.0\\.1:${srv.port}`));
    await until(() => /pulling trials from/.test(wOut()), 30_000, 'the worker to log its server', 100);
    t.regex(wOut(), new RegExp(`pulling trials from nats://alice:\\*\\*\\*@127\\.0\\.0\\.1:${srv.port}`));
    worker.child.kill('SIGTERM');
    const wr = await worker;
    check('worker (right password)', wOut());
    t.is(wr.code, 0, wOut());
    t.true(seen.join('').length > 0);
  } finally {
    await srv.stop();
  }
});
