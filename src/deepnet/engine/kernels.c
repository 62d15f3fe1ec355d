/* Direct 3x3 "valid" convolutions and 2x2 max pooling for a population of networks.
 *
 * Layout: images innermost. A feature map is (P, C, H, W, N): member, channel, row, column,
 * image; N is a multiple of 16 so that each (p, c, y, x) holds whole 16-float vectors.
 * A weight is (P, Co, Ci, 3, 3) and a bias (P, Co), as torch stores them per member.
 * Every loop keeps a block of up to 8 channels in vector registers and streams the
 * images, which is what makes these faster than grouped convolutions with 4-16 channels
 * per group. Compiled at first use by deepnet/engine/kernels.py.
 */
#include <stdint.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define LOAD(ptr) (*(const v16 *)(ptr))
#define STORE(ptr, v) (*(v16 *)(ptr) = (v))
#define BLOCK 8

/* out = conv(in, w) + b */
void conv_forward(const float *in, const float *w, const float *b, float *out,
                  int P, int Ci, int Co, int H, int W, int N) {
  const int Ho = H - 2, Wo = W - 2;
  for (int p = 0; p < P; p++) {
    const float *inp = in + (int64_t)p * Ci * H * W * N;
    const float *wp = w + (int64_t)p * Co * Ci * 9;
    float *outp = out + (int64_t)p * Co * Ho * Wo * N;
    for (int co0 = 0; co0 < Co; co0 += BLOCK) {
      const int cb = Co - co0 < BLOCK ? Co - co0 : BLOCK;
      for (int y = 0; y < Ho; y++)
        for (int x = 0; x < Wo; x++)
          for (int n = 0; n < N; n += 16) {
            v16 acc[BLOCK];
            for (int c = 0; c < cb; c++) acc[c] = (v16){} + b[p * Co + co0 + c];
            for (int ci = 0; ci < Ci; ci++)
              for (int dy = 0; dy < 3; dy++)
                for (int dx = 0; dx < 3; dx++) {
                  const v16 v = LOAD(inp + (((int64_t)ci * H + y + dy) * W + x + dx) * N + n);
                  const float *wk = wp + ((int64_t)co0 * Ci + ci) * 9 + dy * 3 + dx;
                  for (int c = 0; c < cb; c++) acc[c] += wk[(int64_t)c * Ci * 9] * v;
                }
            for (int c = 0; c < cb; c++)
              STORE(outp + (((int64_t)(co0 + c) * Ho + y) * Wo + x) * N + n, acc[c]);
          }
    }
  }
}

/* One (y, x) position of conv_backward_input for NB vectors of images starting at n. */
static inline __attribute__((always_inline)) void backward_input_at(
    const float *gp, const float *wp, float *ginp, int ci0, int cb, int Ci, int Co, int H,
    int W, int Ho, int Wo, int N, int y, int x, int n, const int NB) {
  v16 acc[BLOCK][2];
  for (int c = 0; c < cb; c++)
    for (int j = 0; j < NB; j++) acc[c][j] = (v16){};
  for (int dy = 0; dy < 3; dy++) {
    const int yo = y - dy;
    if (yo < 0 || yo >= Ho) continue;
    for (int dx = 0; dx < 3; dx++) {
      const int xo = x - dx;
      if (xo < 0 || xo >= Wo) continue;
      for (int co = 0; co < Co; co++) {
        const float *src = gp + (((int64_t)co * Ho + yo) * Wo + xo) * N + n;
        v16 v[2];
        for (int j = 0; j < NB; j++) v[j] = LOAD(src + 16 * j);
        const float *wk = wp + ((int64_t)co * Ci + ci0) * 9 + dy * 3 + dx;
        for (int c = 0; c < cb; c++) {
          const float weight = wk[c * 9];
          for (int j = 0; j < NB; j++) acc[c][j] += weight * v[j];
        }
      }
    }
  }
  for (int c = 0; c < cb; c++)
    for (int j = 0; j < NB; j++)
      STORE(ginp + (((int64_t)(ci0 + c) * H + y) * W + x) * N + n + 16 * j, acc[c][j]);
}

/* gin[p, ci, y, x] = sum over co, dy, dx of w[p, co, ci, dy, dx] * g[p, co, y - dy, x - dx] */
void conv_backward_input(const float *g, const float *w, float *gin,
                         int P, int Ci, int Co, int H, int W, int N) {
  const int Ho = H - 2, Wo = W - 2;
  for (int p = 0; p < P; p++) {
    const float *gp = g + (int64_t)p * Co * Ho * Wo * N;
    const float *wp = w + (int64_t)p * Co * Ci * 9;
    float *ginp = gin + (int64_t)p * Ci * H * W * N;
    for (int ci0 = 0; ci0 < Ci; ci0 += BLOCK) {
      const int cb = Ci - ci0 < BLOCK ? Ci - ci0 : BLOCK;
      for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
          int n = 0;
          for (; n + 32 <= N; n += 32)
            backward_input_at(gp, wp, ginp, ci0, cb, Ci, Co, H, W, Ho, Wo, N, y, x, n, 2);
          if (n < N)
            backward_input_at(gp, wp, ginp, ci0, cb, Ci, Co, H, W, Ho, Wo, N, y, x, n, 1);
        }
    }
  }
}

/* gw[p, co, ci, dy, dx] = sum over y, x, n of g[p, co, y, x, n] * in[p, ci, y + dy, x + dx, n];
 * gb[p, co] = sum of g[p, co]. Two output channels at a time share each input load. */
void conv_backward_weight(const float *g, const float *in, float *gw, float *gb,
                          int P, int Ci, int Co, int H, int W, int N) {
  const int Ho = H - 2, Wo = W - 2;
  for (int p = 0; p < P; p++) {
    const float *gp = g + (int64_t)p * Co * Ho * Wo * N;
    const float *inp = in + (int64_t)p * Ci * H * W * N;
    for (int co0 = 0; co0 < Co; co0 += 2) {
      const int cb = Co - co0 < 2 ? Co - co0 : 2;
      v16 bias[2] = {(v16){}, (v16){}};
      for (int ci = 0; ci < Ci; ci++) {
        v16 acc[2][9];
        for (int c = 0; c < 2; c++)
          for (int k = 0; k < 9; k++) acc[c][k] = (v16){};
        for (int y = 0; y < Ho; y++)
          for (int x = 0; x < Wo; x++)
            for (int n = 0; n < N; n += 16) {
              v16 gv[2];
              for (int c = 0; c < cb; c++) {
                gv[c] = LOAD(gp + (((int64_t)(co0 + c) * Ho + y) * Wo + x) * N + n);
                if (ci == 0) bias[c] += gv[c];
              }
              for (int dy = 0; dy < 3; dy++)
                for (int dx = 0; dx < 3; dx++) {
                  const v16 v = LOAD(inp + (((int64_t)ci * H + y + dy) * W + x + dx) * N + n);
                  for (int c = 0; c < cb; c++) acc[c][dy * 3 + dx] += gv[c] * v;
                }
            }
        for (int c = 0; c < cb; c++)
          for (int k = 0; k < 9; k++) {
            float s = 0.0f;
            for (int l = 0; l < 16; l++) s += acc[c][k][l];
            gw[(((int64_t)p * Co + co0 + c) * Ci + ci) * 9 + k] = s;
          }
      }
      for (int c = 0; c < cb; c++) {
        float s = 0.0f;
        for (int l = 0; l < 16; l++) s += bias[c][l];
        gb[(int64_t)p * Co + co0 + c] = s;
      }
    }
  }
}

/* 2x2 max pooling over (M, H, W, N) maps (M = P * C); which of the four won goes to idx
 * (0-3, the first maximum in row-major order, as torch picks it). */
void pool_forward(const float *in, float *out, uint8_t *idx, int M, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  for (int m = 0; m < M; m++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++) {
        const float *a = in + (((int64_t)m * H + 2 * y) * W + 2 * x) * N;
        const float *c = a + (int64_t)W * N;
        float *o = out + (((int64_t)m * Ho + y) * Wo + x) * N;
        uint8_t *k = idx + (((int64_t)m * Ho + y) * Wo + x) * N;
        for (int n = 0; n < N; n++) {
          float best = a[n];
          uint8_t which = 0;
          if (a[N + n] > best) best = a[N + n], which = 1;
          if (c[n] > best) best = c[n], which = 2;
          if (c[N + n] > best) best = c[N + n], which = 3;
          o[n] = best;
          k[n] = which;
        }
      }
}

/* gin = the pooled gradient routed back to each window's maximum, zero elsewhere */
void pool_backward(const float *g, const uint8_t *idx, float *gin, int M, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  for (int64_t i = 0, total = (int64_t)M * H * W * N; i < total; i++) gin[i] = 0.0f;
  for (int m = 0; m < M; m++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++) {
        float *a = gin + (((int64_t)m * H + 2 * y) * W + 2 * x) * N;
        float *rows[4] = {a, a + N, a + (int64_t)W * N, a + (int64_t)W * N + N};
        const float *gv = g + (((int64_t)m * Ho + y) * Wo + x) * N;
        const uint8_t *k = idx + (((int64_t)m * Ho + y) * Wo + x) * N;
        for (int n = 0; n < N; n++) rows[k[n]][n] = gv[n];
      }
}
