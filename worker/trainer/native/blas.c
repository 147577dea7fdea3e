/*
 * phasemap_native (this file: the BLAS part and the module's init; streams*.c: the MLP's stream loops):
 * cblas_sgemm from the system's OpenBLAS for the trainer's matmuls on the wasm backend.
 *
 * tfjs-backend-wasm runs matmuls through XNNPACK compiled to wasm SIMD: ~15 GFLOP/s on the training
 * shapes ([5000, 50] x [50, 50]), where OpenBLAS's native kernels reach ~80 (measured on the 2-core
 * dev machine, README "Performance"). The wasm backend keeps every tensor in its heap, an ordinary
 * ArrayBuffer, so this addon takes Float32Array views of that heap and writes the product in place:
 * no copy. worker/trainer/backend.ts replaces the wasm BatchMatMul / _FusedMatMul kernels with it.
 *
 * The library is opened with dlopen at load time, so the addon builds with nothing but Node's headers
 * and a machine without OpenBLAS keeps the wasm kernels (status().available is false, status().error
 * says why). PHASEMAP_BLAS names another library with cblas_sgemm, or "off" to disable.
 * OpenBLAS 0.3.21 (Debian 12) does not recognise recent Xeons and falls back to its SSE3 "Prescott"
 * kernels (~16 GFLOP/s); unless OPENBLAS_CORETYPE is set, the core type is chosen here from the CPU's
 * features (AVX-512 -> SkylakeX, AVX2+FMA -> Haswell) before the library initialises.
 * Calls are single-threaded (OPENBLAS_NUM_THREADS=1): parallelism is one trial per slot, so slots call
 * sgemm concurrently. OpenBLAS's pthreads build (Debian libopenblas0-pthread) takes that; any other
 * (its sequential build shares work buffers between threads without a lock) is called under a lock.
 */
#define NAPI_VERSION 8
#include <dlfcn.h>
#include <node_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc);
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

static sgemm_fn p_sgemm = NULL;
/*
 * Set when the library is not known to take concurrent calls (OpenBLAS's sequential build, Debian
 * libopenblas0-serial, shares its work buffers between threads without a lock: two slots' products
 * running at once gave other results, run to run): every call then holds `serial_lock`.
 */
static int serialise = 1;
static pthread_mutex_t serial_lock = PTHREAD_MUTEX_INITIALIZER;
static int parallel_kind = -1; /* openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP; -1 unknown */
static const char *(*p_corename)(void) = NULL;
static char load_error[512] = "";
static char lib_name[256] = "";

static void load_blas(void) {
  static int done = 0;
  if (done) return;
  done = 1;
  const char *env = getenv("PHASEMAP_BLAS");
  /* One thread per call: parallelism is one trial per slot (and no idle thread pool at load). */
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  if (env && strcmp(env, "off") == 0) {
    snprintf(load_error, sizeof load_error, "disabled by PHASEMAP_BLAS=off");
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  if (!getenv("OPENBLAS_CORETYPE")) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
      setenv("OPENBLAS_CORETYPE", "SkylakeX", 0);
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      setenv("OPENBLAS_CORETYPE", "Haswell", 0);
  }
#endif
  const char *names[] = {env && *env ? env : NULL, "libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"};
  void *h = NULL;
  char errs[400] = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) {
    if (!names[i]) continue;
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (h) snprintf(lib_name, sizeof lib_name, "%s", names[i]);
    else if (!errs[0]) snprintf(errs, sizeof errs, "%s", dlerror());
  }
  if (!h) {
    snprintf(load_error, sizeof load_error, "no BLAS library could be opened (%s); install OpenBLAS (Debian: libopenblas0-pthread)", errs);
    return;
  }
  p_sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
  if (!p_sgemm) {
    snprintf(load_error, sizeof load_error, "%s has no cblas_sgemm", lib_name);
    return;
  }
  void (*set_threads)(int) = (void (*)(int))dlsym(h, "openblas_set_num_threads");
  if (set_threads) set_threads(1);
  int (*get_parallel)(void) = (int (*)(void))dlsym(h, "openblas_get_parallel");
  if (get_parallel) parallel_kind = get_parallel();
  serialise = parallel_kind != 1; /* only OpenBLAS's pthreads build is known to be safe */
  p_corename = (const char *(*)(void))dlsym(h, "openblas_get_corename");
}

static float *f32(napi_env env, napi_value v, size_t *len) {
  napi_typedarray_type t;
  void *data;
  size_t n;
  if (napi_get_typedarray_info(env, v, &t, &n, &data, NULL, NULL) != napi_ok || t != napi_float32_array) return NULL;
  *len = n;
  return (float *)data;
}

/*
 * sgemm(a, b, c, batch, m, n, k, transA, transB, strideA, strideB): for i < batch,
 * c[i] [m, n] = op(a + i*strideA) · op(b + i*strideB), row-major; op(a) is [m, k] (a stored [k, m]
 * when transA), op(b) is [k, n] (b stored [n, k] when transB). A stride of 0 broadcasts the operand.
 * Throws TypeError for non-Float32Array arguments, RangeError when the shapes exceed the arrays.
 */
static napi_value sgemm(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (!p_sgemm) {
    napi_throw_error(env, NULL, load_error);
    return NULL;
  }
  if (argc < 11) {
    napi_throw_type_error(env, NULL, "sgemm: expected 11 arguments");
    return NULL;
  }
  size_t la = 0, lb = 0, lc = 0;
  float *a = f32(env, argv[0], &la), *b = f32(env, argv[1], &lb), *c = f32(env, argv[2], &lc);
  if (!a || !b || !c) {
    napi_throw_type_error(env, NULL, "sgemm: a, b and c must be Float32Arrays");
    return NULL;
  }
  int64_t v[8];
  for (int i = 0; i < 8; i++) {
    if (napi_get_value_int64(env, argv[3 + i], &v[i]) != napi_ok || v[i] < 0 || v[i] > 0x7fffffff) {
      napi_throw_range_error(env, NULL, "sgemm: sizes and strides must be integers in [0, 2^31)");
      return NULL;
    }
  }
  int64_t batch = v[0], m = v[1], n = v[2], k = v[3], ta = v[4], tb = v[5], sa = v[6], sb = v[7];
  if (batch == 0 || m == 0 || n == 0) return NULL;
  if ((batch - 1) * sa + m * k > (int64_t)la || (batch - 1) * sb + k * n > (int64_t)lb || batch * m * n > (int64_t)lc) {
    napi_throw_range_error(env, NULL, "sgemm: the shapes exceed the arrays");
    return NULL;
  }
  if (k == 0) {
    memset(c, 0, sizeof(float) * batch * m * n);
    return NULL;
  }
  if (serialise) pthread_mutex_lock(&serial_lock);
  for (int64_t i = 0; i < batch; i++)
    p_sgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, (int)m, (int)n, (int)k, 1.0f, a + i * sa, ta ? (int)m : (int)k,
            b + i * sb, tb ? (int)k : (int)n, 0.0f, c + i * m * n, (int)n);
  if (serialise) pthread_mutex_unlock(&serial_lock);
  return NULL;
}

/* status(): { available, library, core, error }. */
static napi_value status(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, s;
  napi_create_object(env, &o);
  napi_get_boolean(env, p_sgemm != NULL, &s);
  napi_set_named_property(env, o, "available", s);
  napi_create_string_utf8(env, lib_name, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "library", s);
  napi_create_string_utf8(env, p_corename ? p_corename() : "", NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "core", s);
  napi_create_string_utf8(env, load_error, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "error", s);
  napi_get_boolean(env, serialise != 0, &s);
  napi_set_named_property(env, o, "serialised", s);
  return o;
}

void register_streams(napi_env env, napi_value exports); /* streams_napi.c */

NAPI_MODULE_INIT() {
  load_blas();
  register_streams(env, exports);
  napi_value f;
  napi_create_function(env, "sgemm", NAPI_AUTO_LENGTH, sgemm, NULL, &f);
  napi_set_named_property(env, exports, "sgemm", f);
  napi_create_function(env, "status", NAPI_AUTO_LENGTH, status, NULL, &f);
  napi_set_named_property(env, exports, "status", f);
  return exports;
}
