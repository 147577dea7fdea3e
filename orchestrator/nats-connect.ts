/**
 * Connecting to NATS with credentials and TLS: user/password, token, nkey seed or `.creds` file
 * (operator/JWT mode), TLS with a private CA and optional client certificate; from command-line
 * flags or PHASEMAP_NATS_* environment variables (flags win). Secrets (passwords, tokens, seeds,
 * JWTs) are never put in an error message or a log line: URLs are printed through redactUrl.
 *
 * Secrets are read from the environment or from files, not from flag values (argv is visible to
 * every user of the machine through `ps`). Credentials embedded in the URL
 * (`nats://user:pass@host:4222`, `nats://TOKEN@host:4222`) work too; prefer the environment.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { connect, credsAuthenticator, nkeyAuthenticator, nkeys, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';

/** Credentials and TLS settings of a NATS connection. Every field is optional; paths are read when connecting. */
export interface NatsAuth {
  /** User name (with `pass`). */
  user?: string;
  /** Password of `user` (a secret). */
  pass?: string;
  /** Authorization token (a secret). */
  token?: string;
  /** Path of a file holding a user nkey seed (`SU…`). */
  nkeySeedFile?: string;
  /** Path of a `.creds` file (user JWT + nkey seed; operator/JWT mode). */
  credsFile?: string;
  /** Path of a PEM file of the CA(s) that signed the server's certificate. */
  tlsCa?: string;
  /** Path of a PEM client certificate (with `tlsKey`), for servers that verify clients. */
  tlsCert?: string;
  /** Path of the PEM private key of `tlsCert`. */
  tlsKey?: string;
  /** Where each field came from (`--nats-creds`, `PHASEMAP_NATS_CREDS`, …), for error messages. */
  sources?: Partial<Record<NatsAuthField, string>>;
}

/** The settable fields of NatsAuth. */
export type NatsAuthField = Exclude<keyof NatsAuth, 'sources'>;

/** Environment variable of each NatsAuth field. PASSWORD and TOKEN hold the secret itself, the others a path. */
export const NATS_ENV: Readonly<Record<NatsAuthField, string>> = {
  user: 'PHASEMAP_NATS_USER',
  pass: 'PHASEMAP_NATS_PASSWORD',
  token: 'PHASEMAP_NATS_TOKEN',
  nkeySeedFile: 'PHASEMAP_NATS_NKEY',
  credsFile: 'PHASEMAP_NATS_CREDS',
  tlsCa: 'PHASEMAP_NATS_CA',
  tlsCert: 'PHASEMAP_NATS_CERT',
  tlsKey: 'PHASEMAP_NATS_KEY',
};

/** Command-line flag of each NatsAuth field (password and token: flags naming a file that holds them). */
export const NATS_FLAGS: Readonly<Record<NatsAuthField, string>> = {
  user: '--nats-user',
  pass: '--nats-password-file',
  token: '--nats-token-file',
  nkeySeedFile: '--nats-nkey',
  credsFile: '--nats-creds',
  tlsCa: '--tls-ca',
  tlsCert: '--tls-cert',
  tlsKey: '--tls-key',
};

/** Bad credential or TLS settings (conflicting, incomplete, a file missing or malformed): a usage error, nothing was connected. */
export class NatsConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NatsConfigError';
  }
}

/**
 * Connecting failed. The message starts with `--nats <redacted URL>: ` and says why (authorization,
 * TLS, or the server not reachable) and what to check; it never holds a secret.
 */
export class NatsConnectError extends Error {
  constructor(
    message: string,
    readonly reason: 'auth' | 'tls' | 'connect',
  ) {
    super(message);
    this.name = 'NatsConnectError';
  }
}

// ---- URLs ---------------------------------------------------------------------------------------

interface ServerUrl {
  /** The URL without its user info. */
  bare: string;
  scheme: string | null;
  /** Decoded user info: `user` alone is a token (as in the other NATS clients). */
  user?: string;
  pass?: string;
}

const decode = (s: string) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

function parseServer(part: string): ServerUrl {
  const s = part.trim();
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(s);
  const scheme = m ? m[1]!.toLowerCase() : null;
  const rest = m ? s.slice(m[0].length) : s;
  // Host names hold no '@': the last one ends the user info (a password may hold an unencoded '@').
  const at = rest.lastIndexOf('@');
  if (at < 0) return { bare: s, scheme };
  const info = rest.slice(0, at);
  const bare = `${m ? m[0] : ''}${rest.slice(at + 1)}`;
  const colon = info.indexOf(':');
  return colon < 0 ? { bare, scheme, user: decode(info) } : { bare, scheme, user: decode(info.slice(0, colon)), pass: decode(info.slice(colon + 1)) };
}

/**
 * A NATS URL (or comma-separated list) safe to print: the password in the user info is replaced by
 * `***` (`nats://user:pass@host` → `nats://user:***@host`), a token alone too (`nats://TOKEN@host` →
 * `nats://***@host`). Anything else is left as it was.
 */
export function redactUrl(url: string): string {
  return url
    .split(',')
    .map((part) => {
      const m = /^(\s*(?:[a-zA-Z][a-zA-Z0-9+.-]*:\/\/)?)(.*)$/s.exec(part)!;
      const rest = m[2]!;
      const at = rest.lastIndexOf('@');
      if (at < 0) return part;
      const info = rest.slice(0, at);
      const colon = info.indexOf(':');
      return `${m[1]}${colon < 0 ? '***' : `${info.slice(0, colon)}:***`}@${rest.slice(at + 1)}`;
    })
    .join(',');
}

// ---- Where settings come from -------------------------------------------------------------------

const FIELDS = Object.keys(NATS_ENV) as NatsAuthField[];
type Method = 'user' | 'token' | 'nkey' | 'creds';
const METHOD_OF: Partial<Record<NatsAuthField, Method>> = { user: 'user', pass: 'user', token: 'token', nkeySeedFile: 'nkey', credsFile: 'creds' };

const label = (auth: NatsAuth, f: NatsAuthField) => auth.sources?.[f] ?? `${NATS_FLAGS[f]}/${NATS_ENV[f]}`;

/**
 * NATS credentials and TLS paths from the environment: PHASEMAP_NATS_USER, PHASEMAP_NATS_PASSWORD,
 * PHASEMAP_NATS_TOKEN (secrets as values), PHASEMAP_NATS_NKEY, PHASEMAP_NATS_CREDS, PHASEMAP_NATS_CA,
 * PHASEMAP_NATS_CERT, PHASEMAP_NATS_KEY (paths). Empty variables count as unset. Nothing is read or checked here.
 */
export function natsAuthFromEnv(env: NodeJS.ProcessEnv = process.env): NatsAuth {
  const auth: NatsAuth = { sources: {} };
  for (const f of FIELDS) {
    const v = env[NATS_ENV[f]];
    if (v) {
      auth[f] = v;
      auth.sources![f] = NATS_ENV[f];
    }
  }
  return auth;
}

/** The commander option values addNatsOptions adds (camel-cased flag names). */
export interface NatsCliOptions {
  natsUser?: string;
  natsPasswordFile?: string;
  natsTokenFile?: string;
  natsNkey?: string;
  natsCreds?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/**
 * Adds the credential and TLS flags to a commander command: --nats-user NAME, --nats-password-file FILE,
 * --nats-token-file FILE, --nats-nkey FILE, --nats-creds FILE, --tls-ca FILE, --tls-cert FILE, --tls-key FILE.
 * Read them back with natsAuthFromOptions(cmd's options).
 */
export function addNatsOptions(cmd: Command): Command {
  const env = (f: NatsAuthField) => ` (env ${NATS_ENV[f]})`;
  return cmd
    .addOption(new Option(`${NATS_FLAGS.user} <name>`, `NATS user name; the password comes from ${NATS_ENV.pass} or ${NATS_FLAGS.pass}${env('user')}`))
    .addOption(new Option(`${NATS_FLAGS.pass} <file>`, `file holding the NATS password (or set ${NATS_ENV.pass}; never on the command line)`))
    .addOption(new Option(`${NATS_FLAGS.token} <file>`, `file holding a NATS authorization token (or set ${NATS_ENV.token})`))
    .addOption(new Option(`${NATS_FLAGS.nkeySeedFile} <file>`, `file holding a NATS user nkey seed (SU…)${env('nkeySeedFile')}`))
    .addOption(new Option(`${NATS_FLAGS.credsFile} <file>`, `NATS .creds file (user JWT + seed, operator mode)${env('credsFile')}`))
    .addOption(new Option(`${NATS_FLAGS.tlsCa} <file>`, `PEM CA certificate(s) to verify the NATS server with${env('tlsCa')}`))
    .addOption(new Option(`${NATS_FLAGS.tlsCert} <file>`, `PEM client certificate, for servers that verify clients (with ${NATS_FLAGS.tlsKey})${env('tlsCert')}`))
    .addOption(new Option(`${NATS_FLAGS.tlsKey} <file>`, `PEM private key of ${NATS_FLAGS.tlsCert}${env('tlsKey')}`));
}

/** The NATS flags given on the command line (their flag names), e.g. to refuse them where no --nats is given. */
export function natsFlagsGiven(opts: NatsCliOptions): string[] {
  const f = optionFields(opts);
  return FIELDS.filter((k) => f[k] !== undefined).map((k) => NATS_FLAGS[k]);
}

function optionFields(o: NatsCliOptions): Partial<Record<NatsAuthField, string>> {
  return {
    user: o.natsUser,
    pass: o.natsPasswordFile,
    token: o.natsTokenFile,
    nkeySeedFile: o.natsNkey,
    credsFile: o.natsCreds,
    tlsCa: o.tlsCa,
    tlsCert: o.tlsCert,
    tlsKey: o.tlsKey,
  };
}

/** A secret from a file: one line (a trailing newline is dropped), not empty. */
function readSecretFile(flag: string, path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new NatsConfigError(`${flag} ${path}: cannot read it (${fileProblem(e)})`);
  }
  const v = text.replace(/\r?\n$/, '');
  if (!v) throw new NatsConfigError(`${flag} ${path}: the file is empty`);
  if (/[\r\n]/.test(v)) throw new NatsConfigError(`${flag} ${path}: expected one line (the secret), found several`);
  return v;
}

/**
 * NatsAuth from the commander options of addNatsOptions, over the environment (natsAuthFromEnv).
 * Flags win: a flag replaces its variable, and a credential given by flags (e.g. --nats-creds) drops
 * the environment's other kinds of credential (e.g. PHASEMAP_NATS_TOKEN). --nats-user with
 * PHASEMAP_NATS_PASSWORD is one credential. The password and token files are read here.
 * @throws NatsConfigError when a password or token file cannot be read or is empty.
 */
export function natsAuthFromOptions(opts: NatsCliOptions, env: NodeJS.ProcessEnv = process.env): NatsAuth {
  const fromEnv = natsAuthFromEnv(env);
  const given = optionFields(opts);
  const flagMethods = new Set(FIELDS.filter((f) => given[f] !== undefined && METHOD_OF[f]).map((f) => METHOD_OF[f]!));
  const auth: NatsAuth = { sources: {} };
  for (const f of FIELDS) {
    const flag = given[f];
    if (flag !== undefined) {
      auth[f] = f === 'pass' || f === 'token' ? readSecretFile(NATS_FLAGS[f], flag) : flag;
      auth.sources![f] = f === 'pass' || f === 'token' ? `${NATS_FLAGS[f]} ${flag}` : NATS_FLAGS[f];
    } else if (fromEnv[f] !== undefined && !(METHOD_OF[f] && flagMethods.size && !flagMethods.has(METHOD_OF[f]!))) {
      auth[f] = fromEnv[f];
      auth.sources![f] = NATS_ENV[f];
    }
  }
  return auth;
}

// ---- Connecting ---------------------------------------------------------------------------------

function fileProblem(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err?.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    default:
      return err?.code ?? String(err?.message ?? e);
  }
}

function readAuthFile(auth: NatsAuth, f: NatsAuthField, path: string): string {
  try {
    return readFileSync(path, 'utf8').replace(/\r\n/g, '\n');
  } catch (e) {
    throw new NatsConfigError(`${label(auth, f)} ${path}: cannot read it (${fileProblem(e)})`);
  }
}

const USER_SEED = /^\s*(SU[A-Z2-7]{56})\s*$/m;
const CREDS_BLOCK = /-{3,}BEGIN NATS USER JWT-{3,}\n\s*([^\s-][^\n]*)\n[\s\S]*?-{3,}BEGIN USER NKEY SEED-{3,}\n\s*(SU[A-Z2-7]+)\s*\n/;

function checkSeed(seed: string): boolean {
  try {
    nkeys.fromSeed(new TextEncoder().encode(seed));
    return true;
  } catch {
    return false;
  }
}

/** Reads a file again on every (re)connect, so a rotated file is picked up; falls back to the last good contents. */
function rereading(auth: NatsAuth, f: NatsAuthField, path: string, first: string, valid: (s: string) => boolean): () => string {
  let last = first;
  return () => {
    try {
      const s = readAuthFile(auth, f, path);
      if (valid(s)) last = s;
    } catch {
      /* keep the last good one */
    }
    return last;
  };
}

/**
 * The nats.js connect options for URL(s) and credentials: servers with the user info stripped (it
 * becomes user/pass or token), reconnects forever (maxReconnectAttempts -1, reconnectTimeWait 500 ms),
 * `authenticator` for an nkey seed or a .creds file (re-read on every reconnect), `tls` with the
 * CA/cert/key files (re-read by nats.js on every reconnect) when one is given or a URL is `tls://`.
 * Files are read and checked now.
 * @throws NatsConfigError for conflicting or incomplete settings and for files that are missing,
 *   unreadable or not what they should be.
 */
export function natsConnectOptions(url: string, name: string, auth: NatsAuth = {}): NodeConnectionOptions {
  const servers = url.split(',').map(parseServer).filter((s) => s.bare.length > 0);
  if (servers.length === 0) throw new NatsConfigError('--nats: no server URL given');
  const inUrl = servers.filter((s) => s.user !== undefined);
  if (inUrl.some((s) => s.user !== inUrl[0]!.user || s.pass !== inUrl[0]!.pass)) {
    throw new NatsConfigError(`--nats ${redactUrl(url)}: the URLs hold different credentials; give the same (or none, and use ${NATS_ENV.user}/${NATS_ENV.pass}) for all`);
  }
  const opts: NodeConnectionOptions = {
    servers: servers.map((s) => s.bare),
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
  };

  // One kind of credential at most.
  const kinds: string[] = [];
  if (inUrl.length) kinds.push(`the credentials in --nats ${redactUrl(url)}`);
  if (auth.user !== undefined || auth.pass !== undefined) kinds.push([auth.user !== undefined ? label(auth, 'user') : null, auth.pass !== undefined ? label(auth, 'pass') : null].filter(Boolean).join(' + '));
  if (auth.token !== undefined) kinds.push(label(auth, 'token'));
  if (auth.nkeySeedFile !== undefined) kinds.push(label(auth, 'nkeySeedFile'));
  if (auth.credsFile !== undefined) kinds.push(label(auth, 'credsFile'));
  if (kinds.length > 1) {
    throw new NatsConfigError(`conflicting NATS credentials: ${kinds.join(' and ')}; give one of user + password, token, nkey or .creds`);
  }

  if (inUrl.length) {
    const u = inUrl[0]!;
    if (u.pass === undefined) opts.token = u.user;
    else {
      opts.user = u.user;
      opts.pass = u.pass;
    }
  }
  if (auth.user !== undefined || auth.pass !== undefined) {
    if (auth.user === undefined) throw new NatsConfigError(`${label(auth, 'pass')} given without a user: set ${NATS_FLAGS.user} (or ${NATS_ENV.user})`);
    if (auth.pass === undefined) throw new NatsConfigError(`${label(auth, 'user')} given without a password: set ${NATS_ENV.pass} or ${NATS_FLAGS.pass} FILE`);
    opts.user = auth.user;
    opts.pass = auth.pass;
  }
  if (auth.token !== undefined) opts.token = auth.token;
  if (auth.nkeySeedFile !== undefined) {
    const path = auth.nkeySeedFile;
    const text = readAuthFile(auth, 'nkeySeedFile', path);
    const seedOf = (s: string) => USER_SEED.exec(s)?.[1];
    const seed = seedOf(text);
    if (!seed || !checkSeed(seed)) {
      throw new NatsConfigError(`${label(auth, 'nkeySeedFile')} ${path}: no user nkey seed in it (expected a line SU… of 58 characters, as \`nk -gen user\` writes)`);
    }
    const read = rereading(auth, 'nkeySeedFile', path, text, (s) => Boolean(seedOf(s)));
    opts.authenticator = nkeyAuthenticator(() => new TextEncoder().encode(seedOf(read())!));
  }
  if (auth.credsFile !== undefined) {
    const path = auth.credsFile;
    const text = readAuthFile(auth, 'credsFile', path);
    const valid = (s: string) => {
      const m = CREDS_BLOCK.exec(s);
      return Boolean(m && m[1]!.split('.').length === 3 && checkSeed(m[2]!));
    };
    if (!valid(text)) {
      throw new NatsConfigError(`${label(auth, 'credsFile')} ${path}: not a NATS .creds file (expected a "BEGIN NATS USER JWT" block and a "BEGIN USER NKEY SEED" block)`);
    }
    const read = rereading(auth, 'credsFile', path, text, valid);
    opts.authenticator = credsAuthenticator(() => new TextEncoder().encode(read()));
  }

  // TLS.
  if ((auth.tlsCert === undefined) !== (auth.tlsKey === undefined)) {
    throw new NatsConfigError(
      auth.tlsCert !== undefined ? `${label(auth, 'tlsCert')} given without ${NATS_FLAGS.tlsKey} (or ${NATS_ENV.tlsKey})` : `${label(auth, 'tlsKey')} given without ${NATS_FLAGS.tlsCert} (or ${NATS_ENV.tlsCert})`,
    );
  }
  const tls: NonNullable<NodeConnectionOptions['tls']> = {};
  const pem = (f: 'tlsCa' | 'tlsCert' | 'tlsKey', what: string) => {
    const path = auth[f]!;
    if (!/-----BEGIN [A-Z0-9 ]+-----/.test(readAuthFile(auth, f, path))) throw new NatsConfigError(`${label(auth, f)} ${path}: not a PEM file (expected ${what})`);
    return path;
  };
  if (auth.tlsCa !== undefined) tls.caFile = pem('tlsCa', 'a "-----BEGIN CERTIFICATE-----" block');
  if (auth.tlsCert !== undefined) tls.certFile = pem('tlsCert', 'a "-----BEGIN CERTIFICATE-----" block');
  if (auth.tlsKey !== undefined) tls.keyFile = pem('tlsKey', 'a "-----BEGIN … PRIVATE KEY-----" block');
  if (Object.keys(tls).length || servers.some((s) => s.scheme === 'tls')) opts.tls = tls;
  return opts;
}

/** Secrets that must not appear in a message. */
function secretsOf(opts: NodeConnectionOptions): string[] {
  return [opts.pass, opts.token].filter((s): s is string => typeof s === 'string' && s.length >= 3);
}

function scrub(msg: string, secrets: string[]): string {
  let m = msg;
  for (const s of secrets) m = m.split(s).join('***');
  return m;
}

const TLS_CODES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS|ERR_SSL|EPROTO|HOSTNAME/;

function credentialHint(url: string, auth: NatsAuth): string {
  if (url.split(',').some((p) => parseServer(p).user !== undefined)) {
    return 'check the user and password (or token) in the --nats URL';
  }
  if (auth.credsFile !== undefined) return `check ${label(auth, 'credsFile')} (is the user JWT expired, is its account known to the server?)`;
  if (auth.nkeySeedFile !== undefined) return `check ${label(auth, 'nkeySeedFile')} (is its public key among the server's users?)`;
  if (auth.token !== undefined) return `check ${label(auth, 'token')}`;
  if (auth.user !== undefined) return `check ${label(auth, 'user')} and ${label(auth, 'pass')}`;
  return `the server wants credentials: give ${NATS_FLAGS.user} with ${NATS_ENV.pass} (or ${NATS_FLAGS.pass}), ${NATS_FLAGS.token}/${NATS_ENV.token}, ${NATS_FLAGS.nkeySeedFile} or ${NATS_FLAGS.credsFile}`;
}

/**
 * The error to show for a failed connect: `--nats <redacted URL>: authorization failed (…); check …`,
 * `--nats …: TLS failed (…); check --tls-ca …` or `--nats …: cannot connect (…); is nats-server
 * running there with JetStream (-js)?`. Never holds a password or token.
 */
export function natsConnectError(url: string, e: unknown, auth: NatsAuth = {}, secrets: string[] = []): NatsConnectError {
  const err = e as Error & { code?: string; cause?: unknown };
  const all = [...secrets, ...[auth.pass, auth.token].filter((s): s is string => typeof s === 'string' && s.length >= 3)];
  const msg = scrub(redactUrl(String(err?.message ?? e)), all);
  const where = `--nats ${redactUrl(url)}`;
  const cause = err?.cause as { code?: string; message?: string } | undefined;
  const codes = [err?.code, cause?.code].filter(Boolean).join(' ');
  if (err?.name === 'AuthorizationError' || /authorization violation|authentication (expired|timeout)|user authentication/i.test(msg)) {
    return new NatsConnectError(`${where}: authorization failed (${msg}); ${credentialHint(url, auth)}`, 'auth');
  }
  if (TLS_CODES.test(codes) || /certificate|'tls'|\bssl\b|handshake|self[- ]signed/i.test(msg)) {
    const hint = /does not support 'tls'/.test(msg)
      ? `the server offers no TLS; drop ${NATS_FLAGS.tlsCa}/${NATS_FLAGS.tlsCert} (and tls://) or enable TLS on the server`
      : `check ${auth.tlsCa !== undefined ? label(auth, 'tlsCa') : `${NATS_FLAGS.tlsCa}/${NATS_ENV.tlsCa} (the CA that signed the server's certificate)`}` +
        `${auth.tlsCert !== undefined ? `, ${label(auth, 'tlsCert')}, ${label(auth, 'tlsKey')}` : ''} and that the server's certificate names this host`;
    return new NatsConnectError(`${where}: TLS failed (${msg}${codes && !msg.includes(codes) ? `, ${codes}` : ''}); ${hint}`, 'tls');
  }
  // Under TLS 1.3 a server that wants a client certificate closes the connection after the handshake: nats.js only times out.
  const noCert = auth.tlsCa !== undefined && auth.tlsCert === undefined && /timeout/i.test(msg) ? `; does the server want a client certificate (${NATS_FLAGS.tlsCert}/${NATS_FLAGS.tlsKey})?` : '';
  return new NatsConnectError(`${where}: cannot connect (${msg}); is nats-server running there with JetStream (-js)?${noCert}`, 'connect');
}

/**
 * Connects to NATS with reconnects forever (a restarted server is waited for; maxReconnectAttempts -1,
 * reconnectTimeWait 500 ms), with the credentials and TLS settings of `auth` or of the URL's user info.
 * @param url NATS URL(s), comma-separated; `nats://user:pass@host`, `nats://TOKEN@host` and `tls://host` work.
 * @param name connection name shown by the server.
 * @throws NatsConfigError for bad settings (nothing was connected); NatsConnectError (worded, redacted)
 *   when the first connect fails.
 */
export async function connectNats(url: string, name: string, auth?: NatsAuth): Promise<NatsConnection> {
  // noAsyncTraces: nats.js otherwise builds two Error objects (stack traces) per request and
  // JetStream publish, about half the client CPU of publishing metrics (measured with the ingest bench).
  const opts = { ...natsConnectOptions(url, name, auth), noAsyncTraces: true };
  let nc: NatsConnection;
  try {
    nc = await connect(opts);
  } catch (e) {
    throw natsConnectError(url, e, auth, secretsOf(opts));
  }
  connectedUrls.set(nc, redactUrl(url));
  return nc;
}

/** The URL (redacted) each connection of connectNats was made with. */
const connectedUrls = new WeakMap<NatsConnection, string>();

/** True for an error of a JetStream request that got no answer (timeout), or found no JetStream to answer it. */
export function isJetStreamUnavailable(e: unknown): boolean {
  const err = e as { name?: string; message?: string; code?: unknown } | null;
  return err?.name === 'TimeoutError' || /\btimeout\b|no responders|jetstream not enabled/i.test(String(err?.message ?? ''));
}

/**
 * The error to show when a JetStream request of `what` got no answer although the server is connected:
 * `--nats <redacted URL>: JetStream did not answer (…); …` for a connection of connectNats (the
 * commands print such a message without a stack trace), `JetStream on <server> did not answer …`
 * otherwise. Any other error is returned as it is.
 */
export function jetStreamError(nc: NatsConnection, e: unknown, what: string): Error {
  if (!isJetStreamUnavailable(e)) return e as Error;
  const url = connectedUrls.get(nc);
  const msg = String((e as Error)?.message ?? e);
  const why = `JetStream did not answer (${what}: ${msg}); is the server's JetStream running (-js), and is the disk of its store not full? A nats-server whose store met a full disk answers no JetStream request until it is restarted`;
  return new NatsConnectError(url ? `--nats ${url}: ${why}` : `${nc.getServer()}: ${why}`, 'connect');
}

/**
 * NatsAuth for a command with an optional --nats (like `run`, whose default is an embedded server
 * without authorization): natsAuthFromOptions when a URL is given; otherwise undefined, and the
 * environment is ignored, but credential/TLS flags are refused.
 * @throws NatsConfigError for flags without --nats, and as natsAuthFromOptions.
 */
export function natsAuthForUrl(url: string | undefined, opts: NatsCliOptions, env: NodeJS.ProcessEnv = process.env): NatsAuth | undefined {
  if (url) return natsAuthFromOptions(opts, env);
  const given = natsFlagsGiven(opts);
  if (given.length) throw new NatsConfigError(`${given.join(', ')}: only with --nats URL (the embedded nats-server has no authorization or TLS)`);
  return undefined;
}

const watched = new WeakSet<NatsConnection>();

/**
 * Logs what happens to a connection: `NATS: lost the connection to HOST:PORT; reconnecting …` when
 * the server it is connected to goes away (a warning), `NATS: reconnected to HOST:PORT after N s`
 * once it is back on any server of the list, and a server's announced shutdown (lame duck mode).
 * The tries in between (every 0.5 s, forever) are not logged. Once per connection: a second call
 * for the same connection (an orchestrator's local worker shares its connection) does nothing.
 */
export function logConnectionEvents(nc: NatsConnection, log: { info(msg: string): void; warn(msg: string): void }): void {
  if (watched.has(nc)) return;
  watched.add(nc);
  void (async () => {
    let since: number | null = null;
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        since ??= Date.now();
        log.warn(`NATS: lost the connection to ${redactUrl(s.server)}; reconnecting (to any server of --nats, or one the cluster announced)`);
      } else if (s.type === 'reconnect') {
        log.info(`NATS: reconnected to ${redactUrl(s.server)}${since === null ? '' : ` after ${((Date.now() - since) / 1000).toFixed(1)} s`}`);
        since = null;
      } else if (s.type === 'ldm') {
        log.warn(`NATS: ${redactUrl(s.server)} is shutting down (lame duck mode); moving to another server`);
      }
    }
  })().catch(() => undefined);
}
