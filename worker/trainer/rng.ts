/**
 * Seeded pseudo-random numbers, generated in JS (float64) so that weights, collocation points,
 * mini-batch orders and the SNR split are identical on every backend (never tf.random).
 *
 * Generator: xoshiro128** (32-bit state words), seeded through splitmix32 from (seed, stream label).
 */

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a hash of a string to a 32-bit unsigned integer (for stream labels). */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A seeded PRNG. Independent streams for different purposes come from `Rng.stream(seed, label)`. */
export class Rng {
  private readonly s = new Uint32Array(4);
  private spare: number | null = null;

  /** @param seed any integer (e.g. the trial seed); @param label names an independent stream. */
  constructor(seed: number, label = '') {
    const st = { s: (Math.floor(seed) ^ Math.imul(hashString(label), 0x27d4eb2d)) | 0 };
    for (let i = 0; i < 4; i++) this.s[i] = splitmix32(st);
    if (this.s[0] === 0 && this.s[1] === 0 && this.s[2] === 0 && this.s[3] === 0) this.s[0] = 1;
  }

  /** The stream named `label` of `seed` (e.g. 'weights', 'collocation', 'batches', 'snr_split'). */
  static stream(seed: number, label: string): Rng {
    return new Rng(seed, label);
  }

  /** Next unsigned 32-bit integer. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2] ^= s[0]!;
    s[3] ^= s[1]!;
    s[1] ^= s[2]!;
    s[0] ^= s[3]!;
    s[2] ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform float64 in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal N(0, 1) (Box–Muller, float64). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A uniformly random permutation of 0..n−1 (Fisher–Yates). */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }
}

/**
 * Latin-hypercube sample of n points in the box `domain` (one [lo, hi] per dimension): along each
 * dimension every one of the n equal strata holds exactly one point, placed uniformly inside it.
 * @returns row-major Float64Array [n, d].
 */
export function latinHypercube(n: number, domain: ReadonlyArray<readonly [number, number]>, rng: Rng): Float64Array {
  const d = domain.length;
  const out = new Float64Array(n * d);
  for (let j = 0; j < d; j++) {
    const [lo, hi] = domain[j]!;
    const perm = rng.permutation(n);
    for (let i = 0; i < n; i++) out[i * d + j] = lo + ((perm[i]! + rng.uniform()) / n) * (hi - lo);
  }
  return out;
}

/**
 * Mini-batch index sampler (science.md §2): each epoch is a fresh seeded permutation of 0..N−1, cut
 * into consecutive batches of `batchSize` (without replacement within an epoch). A tail shorter than
 * `batchSize` is dropped (so every step has the same batch size) and a new epoch starts.
 */
export class BatchSampler {
  private perm: Int32Array = new Int32Array(0);
  private pos = 0;
  constructor(
    readonly n: number,
    readonly batchSize: number,
    private readonly rng: Rng,
  ) {
    if (!(batchSize >= 1 && batchSize <= n)) throw new Error(`batch size ${batchSize} must be in [1, ${n}]`);
  }
  /** Starts a new epoch when the current one cannot fill the next batch. */
  private refill(): void {
    if (this.pos + this.batchSize > this.perm.length) {
      this.perm = this.rng.permutation(this.n);
      this.pos = 0;
    }
  }
  /** Indices of the next batch, Int32Array [batchSize]. */
  next(): Int32Array {
    this.refill();
    const out = this.perm.slice(this.pos, this.pos + this.batchSize);
    this.pos += this.batchSize;
    return out;
  }
  /**
   * Skips `steps` batches exactly as `steps` calls of `next()` would (same random stream position,
   * same epochs), without copying them out: a resumed trial's sampler at step s (worker/trainer/resume.ts).
   */
  skip(steps: number): void {
    for (let i = 0; i < steps; i++) {
      this.refill();
      this.pos += this.batchSize;
    }
  }
  /** The batch the next `next()` returns (a copy), without consuming it. */
  peek(): Int32Array {
    this.refill();
    return this.perm.slice(this.pos, this.pos + this.batchSize);
  }
}
