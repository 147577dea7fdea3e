/*
 * The fused MLP's per-element stream loops (network.ts heapTanhForward, heapLayer0Forward,
 * heapTanhBackward, heapLayer0Backward) in C, on views of the wasm heap.
 *
 * Each function does, element by element and in the same order, the same double-precision
 * operations as the JS loop that network.ts generates for the stream layout (science.md §2: the
 * tanh layer's value, first- and diagonal second-derivative streams and their backward), with the
 * same tanh (`tanh_d` = backend.ts `tanhD`, its tables passed in by `set_tanh_tables`), and is
 * compiled without floating-point contraction (-ffp-contract=off: no fused multiply-add), so its
 * results equal the JS loop's bit for bit (test/native-streams.test.ts). Layouts, all row-major:
 *   streams  [G, S, n, w]: element (g, s, i, j) at g*S*n*w + s*n*w + i*w + j (stream 0 the value);
 *   value    [G, 1, n, w]: (g, i, j) at (g*n + i)*w + j;
 *   inputs x [G, n, d];  weights W0 [d, w] or [G, d, w];  biases [w] or [G, w].
 * Stream s = 1 + p holds the derivative along input first[p]; s = 1 + nd + q the second derivative
 * along second[q], whose first derivative is stream 1 + secPos[q].
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "streams.h"

static double EXP_TABLE[32];
static double POW2[64];

void set_tanh_tables(const double *exp_table, const double *pow2) {
  memcpy(EXP_TABLE, exp_table, sizeof EXP_TABLE);
  memcpy(POW2, pow2, sizeof POW2);
}

/* backend.ts tanhD, operation for operation. */
static inline double tanh_d(double x) {
  if (x != x) return x;
  if (fabs(x) < 0.17) {
    const double x2 = x * x;
    return x + x * x2 * (-1.0 / 3 + x2 * (2.0 / 15 + x2 * (-17.0 / 315 + x2 * (62.0 / 2835))));
  }
  const double y = 2 * (x > 10 ? 10 : (x < -10 ? -10 : x));
  const int32_t k = (int32_t)(y * 46.16624130844683 + 1024.5) - 1024;
  const double r = y - k * 0.02166084939249829;
  const double p = 1 + r * (1 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120)))));
  const double e = POW2[(k >> 5) + 32] * EXP_TABLE[k & 31] * p;
  return (e - 1) / (e + 1);
}

void tanh_f32(const float *x, float *out, size_t len) {
  for (size_t i = 0; i < len; i++) out[i] = (float)tanh_d(x[i]);
}

void fwd_hidden(const StreamLayout *L, int bPer, const float *Z, const float *B, float *Ao, float *ao) {
  const int G = L->G, n = L->n, w = L->w, S = L->S, nd = L->nd, ns = L->ns;
  const size_t st = (size_t)n * w;
  double av[w], s1[w], s2[w];
  for (int g = 0; g < G; g++) {
    const float *b = B + (bPer ? (size_t)g * w : 0);
    for (int i = 0; i < n; i++) {
      const size_t base = (size_t)g * S * st + (size_t)i * w;
      const size_t abase = ((size_t)g * n + i) * w;
      for (int j = 0; j < w; j++) {
        const double v = tanh_d((double)Z[base + j] + (double)b[j]);
        av[j] = v;
        ao[abase + j] = (float)v;
      }
      if (S == 1) continue;
      for (int j = 0; j < w; j++) {
        Ao[base + j] = (float)av[j];
        s1[j] = 1 - av[j] * av[j];
        s2[j] = -2 * av[j] * s1[j];
      }
      for (int p = 0; p < nd; p++) {
        const size_t o = base + (size_t)(1 + p) * st;
        for (int j = 0; j < w; j++) Ao[o + j] = (float)(s1[j] * (double)Z[o + j]);
      }
      for (int q = 0; q < ns; q++) {
        const size_t o = base + (size_t)(1 + nd + q) * st;
        const size_t oc = base + (size_t)(1 + L->secPos[q]) * st;
        for (int j = 0; j < w; j++) {
          const double zd = Z[oc + j];
          Ao[o + j] = (float)(s1[j] * (double)Z[o + j] + s2[j] * zd * zd);
        }
      }
    }
  }
}

void fwd_layer0(const StreamLayout *L, int bPer, int wPer, const float *Z, const float *B, const float *W, float *Ao, float *ao) {
  const int G = L->G, n = L->n, w = L->w, d = L->d, S = L->S, nd = L->nd, ns = L->ns;
  const size_t st = (size_t)n * w;
  double s1[w], s2[w];
  for (int g = 0; g < G; g++) {
    const float *b = B + (bPer ? (size_t)g * w : 0);
    const float *Wg = W + (wPer ? (size_t)g * d * w : 0);
    for (int i = 0; i < n; i++) {
      const size_t base = (size_t)g * S * st + (size_t)i * w;
      const size_t abase = ((size_t)g * n + i) * w;
      for (int j = 0; j < w; j++) {
        const double v = tanh_d((double)Z[abase + j] + (double)b[j]);
        ao[abase + j] = (float)v;
        Ao[base + j] = (float)v;
        s1[j] = 1 - v * v;
        s2[j] = -2 * v * s1[j];
      }
      for (int p = 0; p < nd; p++) {
        const size_t o = base + (size_t)(1 + p) * st;
        const float *wr = Wg + (size_t)L->first[p] * w;
        for (int j = 0; j < w; j++) Ao[o + j] = (float)(s1[j] * (double)wr[j]);
      }
      for (int q = 0; q < ns; q++) {
        const size_t o = base + (size_t)(1 + nd + q) * st;
        const float *wr = Wg + (size_t)L->second[q] * w;
        for (int j = 0; j < w; j++) {
          const double wq = wr[j];
          Ao[o + j] = (float)(s2[j] * wq * wq);
        }
      }
    }
  }
}

void bwd_hidden(const StreamLayout *L, int bPer, const float *D, const float *a, const float *Z, float *dZ, double *db) {
  const int G = L->G, n = L->n, w = L->w, S = L->S, nd = L->nd, ns = L->ns;
  const size_t st = (size_t)n * w;
  double s1[w], s2[w], av[w], ds1[w], ds2[w];
  double dzd[(nd > 0 ? nd : 1) * w];
  for (int g = 0; g < G; g++) {
    double *dbg = db + (bPer ? (size_t)g * w : 0);
    for (int i = 0; i < n; i++) {
      const size_t base = (size_t)g * S * st + (size_t)i * w;
      const size_t abase = ((size_t)g * n + i) * w;
      if (S == 1) {
        for (int j = 0; j < w; j++) {
          const double v = a[abase + j];
          const double dzv = (1 - v * v) * (double)D[base + j];
          dZ[base + j] = (float)dzv;
          dbg[j] += dzv;
        }
        continue;
      }
      for (int j = 0; j < w; j++) {
        const double v = a[abase + j];
        av[j] = v;
        s1[j] = 1 - v * v;
        s2[j] = -2 * v * s1[j];
        ds1[j] = 0;
        ds2[j] = 0;
      }
      for (int p = 0; p < nd; p++) {
        const size_t o = base + (size_t)(1 + p) * st;
        double *dz = dzd + (size_t)p * w;
        for (int j = 0; j < w; j++) {
          const double dD = D[o + j];
          ds1[j] += dD * (double)Z[o + j];
          dz[j] = s1[j] * dD;
        }
      }
      for (int q = 0; q < ns; q++) {
        const int c = L->secPos[q];
        const size_t o = base + (size_t)(1 + nd + q) * st;
        const size_t oc = base + (size_t)(1 + c) * st;
        double *dz = dzd + (size_t)c * w;
        for (int j = 0; j < w; j++) {
          const double dS = D[o + j];
          const double zd = Z[oc + j];
          ds1[j] += dS * (double)Z[o + j];
          ds2[j] += dS * zd * zd;
          dZ[o + j] = (float)(s1[j] * dS);
          dz[j] += 2 * s2[j] * zd * dS;
        }
      }
      for (int p = 0; p < nd; p++) {
        const size_t o = base + (size_t)(1 + p) * st;
        const double *dz = dzd + (size_t)p * w;
        for (int j = 0; j < w; j++) dZ[o + j] = (float)dz[j];
      }
      for (int j = 0; j < w; j++) {
        const double v = av[j];
        const double dzv = s1[j] * ((double)D[base + j] - 2 * v * ds1[j] + (6 * v * v - 2) * ds2[j]);
        dZ[base + j] = (float)dzv;
        dbg[j] += dzv;
      }
    }
  }
}

void bwd_layer0(const StreamLayout *L, int bPer, int gPer, int wPer, const float *D, const float *a, const float *W, const float *X, double *dW, double *db) {
  const int G = L->G, n = L->n, w = L->w, d = L->d, S = L->S, nd = L->nd, ns = L->ns;
  const size_t st = (size_t)n * w;
  double s1[w], s2[w], acc1[w], acc2[w], dzv[w];
  for (int g = 0; g < G; g++) {
    double *dbg = db + (bPer ? (size_t)g * w : 0);
    double *dWg = dW + (gPer ? (size_t)g * d * w : 0);
    const float *Wg = W + (wPer ? (size_t)g * d * w : 0);
    for (int i = 0; i < n; i++) {
      const size_t base = (size_t)g * S * st + (size_t)i * w;
      const size_t abase = ((size_t)g * n + i) * w;
      const float *x = X + ((size_t)g * n + i) * d;
      if (S == 1) {
        for (int j = 0; j < w; j++) {
          const double v = a[abase + j];
          dzv[j] = (1 - v * v) * (double)D[base + j];
        }
      } else {
        for (int j = 0; j < w; j++) {
          const double v = a[abase + j];
          s1[j] = 1 - v * v;
          s2[j] = -2 * v * s1[j];
          acc1[j] = 0;
          acc2[j] = 0;
        }
        for (int p = 0; p < nd; p++) {
          const size_t o = base + (size_t)(1 + p) * st;
          const float *wr = Wg + (size_t)L->first[p] * w;
          double *dwr = dWg + (size_t)L->first[p] * w;
          for (int j = 0; j < w; j++) {
            const double dD = D[o + j];
            acc1[j] += dD * (double)wr[j];
            dwr[j] += s1[j] * dD;
          }
        }
        for (int q = 0; q < ns; q++) {
          const size_t o = base + (size_t)(1 + nd + q) * st;
          const float *wr = Wg + (size_t)L->second[q] * w;
          double *dwr = dWg + (size_t)L->second[q] * w;
          for (int j = 0; j < w; j++) {
            const double dS = D[o + j];
            const double wv = wr[j];
            acc2[j] += dS * wv * wv;
            dwr[j] += 2 * s2[j] * dS * wv;
          }
        }
        for (int j = 0; j < w; j++) {
          const double v = a[abase + j];
          dzv[j] = s1[j] * ((double)D[base + j] - 2 * v * acc1[j] + (6 * v * v - 2) * acc2[j]);
        }
      }
      for (int j = 0; j < w; j++) dbg[j] += dzv[j];
      for (int k = 0; k < d; k++) {
        const double xk = x[k];
        double *dwr = dWg + (size_t)k * w;
        for (int j = 0; j < w; j++) dwr[j] += xk * dzv[j];
      }
    }
  }
}
