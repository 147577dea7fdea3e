/* The fused MLP's stream loops in C (streams.c); see there for layouts and the bit-identity contract. */
#ifndef PHASEMAP_STREAMS_H
#define PHASEMAP_STREAMS_H
#include <stddef.h>

#define STREAMS_MAX_INPUTS 8

typedef struct {
  int G, n, w, d, S, nd, ns;
  int first[STREAMS_MAX_INPUTS], second[STREAMS_MAX_INPUTS], secPos[STREAMS_MAX_INPUTS];
} StreamLayout;

void set_tanh_tables(const double *exp_table, const double *pow2);
void tanh_f32(const float *x, float *out, size_t len);
void fwd_hidden(const StreamLayout *L, int bPer, const float *Z, const float *B, float *Ao, float *ao);
void fwd_layer0(const StreamLayout *L, int bPer, int wPer, const float *Z, const float *B, const float *W, float *Ao, float *ao);
void bwd_hidden(const StreamLayout *L, int bPer, const float *D, const float *a, const float *Z, float *dZ, double *db);
void bwd_layer0(const StreamLayout *L, int bPer, int gPer, int wPer, const float *D, const float *a, const float *W, const float *X, double *dW, double *db);
#endif
