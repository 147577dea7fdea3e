/*
 * N-API glue of streams.c: argument checks (types, lengths against the layout; a RangeError rather
 * than a write outside an array), then the loop. Registered on the addon's exports by blas.c.
 *
 * layout: Int32Array [G, n, w, d, S, nd, ns, first[nd]..., second[ns]..., secPos[ns]...].
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>

#include "streams.h"

#define MAX_WIDTH 4096

static int tables_set = 0;

static void *typed(napi_env env, napi_value v, napi_typedarray_type want, size_t *len) {
  napi_valuetype vt;
  if (napi_typeof(env, v, &vt) != napi_ok || vt == napi_null || vt == napi_undefined) return NULL;
  napi_typedarray_type t;
  void *data;
  size_t n;
  if (napi_get_typedarray_info(env, v, &t, &n, &data, NULL, NULL) != napi_ok || t != want) return NULL;
  *len = n;
  return data;
}

static int fail(napi_env env, const char *msg) {
  napi_throw_range_error(env, NULL, msg);
  return 0;
}

static int get_layout(napi_env env, napi_value v, StreamLayout *L) {
  size_t len = 0;
  int32_t *p = typed(env, v, napi_int32_array, &len);
  if (!p || len < 7) return fail(env, "streams: layout must be an Int32Array [G, n, w, d, S, nd, ns, ...]");
  L->G = p[0], L->n = p[1], L->w = p[2], L->d = p[3], L->S = p[4], L->nd = p[5], L->ns = p[6];
  if (L->G < 1 || L->n < 0 || L->w < 1 || L->w > MAX_WIDTH || L->d < 0 || L->d > STREAMS_MAX_INPUTS || L->nd < 0 || L->ns < 0 ||
      L->nd > STREAMS_MAX_INPUTS || L->ns > L->nd || L->S != 1 + L->nd + L->ns || len != (size_t)(7 + L->nd + 2 * L->ns))
    return fail(env, "streams: bad layout");
  for (int i = 0; i < L->nd; i++) L->first[i] = p[7 + i];
  for (int i = 0; i < L->ns; i++) L->second[i] = p[7 + L->nd + i], L->secPos[i] = p[7 + L->nd + L->ns + i];
  for (int i = 0; i < L->nd; i++)
    if (L->first[i] < 0 || (L->d > 0 && L->first[i] >= L->d)) return fail(env, "streams: bad layout (first)");
  for (int i = 0; i < L->ns; i++)
    if (L->second[i] < 0 || (L->d > 0 && L->second[i] >= L->d) || L->secPos[i] < 0 || L->secPos[i] >= L->nd) return fail(env, "streams: bad layout (second)");
  return 1;
}

/* Sizes of the layout's arrays: every stream [G, S, n, w]; the value stream [G, 1, n, w]; a per-group
 * array of `each` values per group ([G, each]) or one shared copy ([each]). */
static size_t all_streams(const StreamLayout *L) { return (size_t)L->G * L->S * L->n * L->w; }
static size_t value_stream(const StreamLayout *L) { return (size_t)L->G * L->n * L->w; }
static size_t per_group(const StreamLayout *L, int per, size_t each) { return per ? (size_t)L->G * each : each; }

static int64_t get_int(napi_env env, napi_value v) {
  int64_t x = 0;
  napi_get_value_int64(env, v, &x);
  return x;
}

#define ARGS(N)                                                  \
  size_t argc = N;                                               \
  napi_value argv[N];                                            \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);          \
  if (argc < N) {                                                \
    napi_throw_type_error(env, NULL, "streams: too few arguments"); \
    return NULL;                                                 \
  }                                                              \
  if (!tables_set) {                                             \
    napi_throw_error(env, NULL, "streams: setTanhTables first"); \
    return NULL;                                                 \
  }

#define F32(name, i, need)                                                        \
  size_t name##_len = 0;                                                          \
  float *name = typed(env, argv[i], napi_float32_array, &name##_len);            \
  if (!name || name##_len < (size_t)(need)) {                                     \
    fail(env, "streams: " #name " must be a Float32Array of the layout's size"); \
    return NULL;                                                                  \
  }
#define F64(name, i, need)                                                        \
  size_t name##_len = 0;                                                          \
  double *name = typed(env, argv[i], napi_float64_array, &name##_len);           \
  if (!name || name##_len < (size_t)(need)) {                                     \
    fail(env, "streams: " #name " must be a Float64Array of the layout's size"); \
    return NULL;                                                                  \
  }

/* setTanhTables(exp32: Float64Array(32) = 2^(j/32), pow2: Float64Array(64) = 2^(k−32)) */
static napi_value js_set_tables(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  size_t a = 0, b = 0;
  double *e = argc > 0 ? typed(env, argv[0], napi_float64_array, &a) : NULL;
  double *p = argc > 1 ? typed(env, argv[1], napi_float64_array, &b) : NULL;
  if (!e || !p || a != 32 || b != 64) {
    fail(env, "setTanhTables: expected Float64Array(32), Float64Array(64)");
    return NULL;
  }
  set_tanh_tables(e, p);
  tables_set = 1;
  return NULL;
}

/* tanh(x: Float32Array, out: Float32Array) */
static napi_value js_tanh(napi_env env, napi_callback_info info) {
  ARGS(2)
  F32(x, 0, 0)
  F32(out, 1, x_len)
  tanh_f32(x, out, x_len);
  return NULL;
}

/* fwdHidden(layout, bPer, Z, B, Ao | null, ao) */
static napi_value js_fwd_hidden(napi_env env, napi_callback_info info) {
  ARGS(6)
  StreamLayout L;
  if (!get_layout(env, argv[0], &L)) return NULL;
  const int bPer = get_int(env, argv[1]) != 0;
  const size_t all = all_streams(&L), one = value_stream(&L);
  F32(Z, 2, all)
  F32(B, 3, per_group(&L, bPer, L.w))
  float *Ao = NULL;
  if (L.S > 1) {
    F32(Ao_, 4, all)
    Ao = Ao_;
  }
  F32(ao, 5, one)
  fwd_hidden(&L, bPer, Z, B, Ao, ao);
  return NULL;
}

/* fwdLayer0(layout, bPer, wPer, Z, B, W, Ao, ao) */
static napi_value js_fwd_layer0(napi_env env, napi_callback_info info) {
  ARGS(8)
  StreamLayout L;
  if (!get_layout(env, argv[0], &L)) return NULL;
  if (L.S == 1 || L.d < 1) {
    fail(env, "fwdLayer0: needs derivative streams and d >= 1");
    return NULL;
  }
  const int bPer = get_int(env, argv[1]) != 0, wPer = get_int(env, argv[2]) != 0;
  const size_t all = all_streams(&L), one = value_stream(&L);
  F32(Z, 3, one)
  F32(B, 4, per_group(&L, bPer, L.w))
  F32(W, 5, per_group(&L, wPer, (size_t)L.d * L.w))
  F32(Ao, 6, all)
  F32(ao, 7, one)
  fwd_layer0(&L, bPer, wPer, Z, B, W, Ao, ao);
  return NULL;
}

/* bwdHidden(layout, bPer, D, a, Z | null, dZ, db) */
static napi_value js_bwd_hidden(napi_env env, napi_callback_info info) {
  ARGS(7)
  StreamLayout L;
  if (!get_layout(env, argv[0], &L)) return NULL;
  const int bPer = get_int(env, argv[1]) != 0;
  const size_t all = all_streams(&L), one = value_stream(&L);
  F32(D, 2, all)
  F32(a, 3, one)
  float *Z = NULL;
  if (L.S > 1) {
    F32(Z_, 4, all)
    Z = Z_;
  }
  F32(dZ, 5, all)
  F64(db, 6, per_group(&L, bPer, L.w))
  bwd_hidden(&L, bPer, D, a, Z, dZ, db);
  return NULL;
}

/* bwdLayer0(layout, bPer, gPer, wPer, D, a, W, X, dW, db) */
static napi_value js_bwd_layer0(napi_env env, napi_callback_info info) {
  ARGS(10)
  StreamLayout L;
  if (!get_layout(env, argv[0], &L)) return NULL;
  if (L.d < 1) {
    fail(env, "bwdLayer0: d >= 1");
    return NULL;
  }
  const int bPer = get_int(env, argv[1]) != 0, gPer = get_int(env, argv[2]) != 0, wPer = get_int(env, argv[3]) != 0;
  const size_t all = all_streams(&L), one = value_stream(&L);
  F32(D, 4, all)
  F32(a, 5, one)
  F32(W, 6, per_group(&L, wPer, (size_t)L.d * L.w))
  F32(X, 7, (size_t)L.G * L.n * L.d)
  F64(dW, 8, per_group(&L, gPer, (size_t)L.d * L.w))
  F64(db, 9, per_group(&L, bPer, L.w))
  bwd_layer0(&L, bPer, gPer, wPer, D, a, W, X, dW, db);
  return NULL;
}

void register_streams(napi_env env, napi_value exports) {
  const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"setTanhTables", js_set_tables}, {"tanh", js_tanh}, {"fwdHidden", js_fwd_hidden},
      {"fwdLayer0", js_fwd_layer0},     {"bwdHidden", js_bwd_hidden}, {"bwdLayer0", js_bwd_layer0},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
}
