/* Direct 3x3 "valid" convolutions and 2x2 max pooling for a population of networks.
 *
 * Layout: images innermost. A feature map is (P, C, H, W, N): member, channel, row, column,
 * image; N is a multiple of 16 so that each (p, c, y, x) holds whole 16-float vectors.
 * A weight is (P, Co, Ci, 3, 3) and a bias (P, Co), as torch stores them per member.
 * Every loop keeps a block of channels in vector registers and streams the images, which
 * is what makes these faster than grouped convolutions with 4-16 channels per group.
 * Two fusions save whole passes over memory: the second convolution with its pooling
 * (its full-size output is never stored) and the input gradient with the derivative of
 * the activation that produced the input. Compiled at first use by deepnet/engine/kernels.py.
 */
#include <stdint.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64), aligned(4)));
#define LOAD(ptr) (*(const v16 *)(ptr))
#define LOADI(ptr) (*(const v16i *)(ptr))
#define STORE(ptr, v) (*(v16 *)(ptr) = (v))
#define STOREI(ptr, v) (*(v16i *)(ptr) = (v))
#define BLOCK 8
#define INLINE static inline __attribute__((always_inline))

/* Activation codes (kernels.py's DERIVATIVES): each derivative as a function of the
 * activation's output a. */
enum { LINEAR, RELU, TANH, SIGMOID, HARD_SIGMOID, SOFTSIGN };

INLINE v16 select(v16i mask, v16 a, v16 b) {
  return (v16)(((v16i)a & mask) | ((v16i)b & ~mask));
}

INLINE v16 derivative(int act, v16 a) {
  const v16 zero = {}, one = zero + 1.0f;
  switch (act) {
    case RELU: return select(a > zero, one, zero);
    case TANH: return one - a * a;
    case SIGMOID: return a * (one - a);
    case HARD_SIGMOID: return select((a > zero) & (a < one), zero + 0.2f, zero);
    case SOFTSIGN: {
      const v16 r = one - select(a < zero, -a, a);
      return r * r;
    }
    default: return one;
  }
}

/* The accumulators of output channels co0..co0+cb at (y, x), images n..n+15. */
INLINE void conv_at(const float *inp, const float *wp, const float *bp, v16 *acc, int co0,
                    int cb, int Ci, int H, int W, int N, int y, int x, int n) {
  for (int c = 0; c < cb; c++) acc[c] = (v16){} + bp[co0 + c];
  for (int ci = 0; ci < Ci; ci++)
    for (int dy = 0; dy < 3; dy++)
      for (int dx = 0; dx < 3; dx++) {
        const v16 v = LOAD(inp + (((int64_t)ci * H + y + dy) * W + x + dx) * N + n);
        const float *wk = wp + ((int64_t)co0 * Ci + ci) * 9 + dy * 3 + dx;
        for (int c = 0; c < cb; c++) acc[c] += wk[(int64_t)c * Ci * 9] * v;
      }
}

/* out = conv(in, w) + b, then max(out, 0) where relu is set */
void conv_forward(const float *in, const float *w, const float *b, float *out, int relu,
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
            conv_at(inp, wp, b + (int64_t)p * Co, acc, co0, cb, Ci, H, W, N, y, x, n);
            for (int c = 0; c < cb; c++) {
              if (relu) acc[c] = select(acc[c] > (v16){}, acc[c], (v16){});
              STORE(outp + (((int64_t)(co0 + c) * Ho + y) * Wo + x) * N + n, acc[c]);
            }
          }
    }
  }
}

/* out = 2x2 max pooling of conv(in, w) + b; idx = which of the window's four won (0-3,
 * the first maximum in row-major order, as torch picks it), one int per output value.
 * A window's four positions read one 4x4 patch of each input channel, loaded row by row. */
#define PBLOCK 4
void conv_pool_forward(const float *in, const float *w, const float *b, float *out,
                       int32_t *idx, int P, int Ci, int Co, int H, int W, int N) {
  const int Hp = (H - 2) / 2, Wp = (W - 2) / 2;
  for (int p = 0; p < P; p++) {
    const float *inp = in + (int64_t)p * Ci * H * W * N;
    const float *wp = w + (int64_t)p * Co * Ci * 9;
    for (int co0 = 0; co0 < Co; co0 += PBLOCK) {
      const int cb = Co - co0 < PBLOCK ? Co - co0 : PBLOCK;
      for (int y = 0; y < Hp; y++)
        for (int x = 0; x < Wp; x++)
          for (int n = 0; n < N; n += 16) {
            v16 acc[4][PBLOCK];
            for (int k = 0; k < 4; k++)
              for (int c = 0; c < cb; c++) acc[k][c] = (v16){} + b[(int64_t)p * Co + co0 + c];
            for (int ci = 0; ci < Ci; ci++)
              for (int r = 0; r < 4; r++) {
                v16 v[4];
                for (int j = 0; j < 4; j++)
                  v[j] = LOAD(inp + (((int64_t)ci * H + 2 * y + r) * W + 2 * x + j) * N + n);
                for (int ky = 0; ky < 2; ky++) {
                  const int dy = r - ky;
                  if (dy < 0 || dy > 2) continue;
                  for (int c = 0; c < cb; c++) {
                    const float *wk = wp + (((int64_t)co0 + c) * Ci + ci) * 9 + dy * 3;
                    for (int kx = 0; kx < 2; kx++)
                      for (int dx = 0; dx < 3; dx++) acc[ky * 2 + kx][c] += wk[dx] * v[kx + dx];
                  }
                }
              }
            for (int c = 0; c < cb; c++) {
              v16 best = acc[0][c];
              v16i which = {};
              for (int k = 1; k < 4; k++) {
                const v16i wins = acc[k][c] > best;
                best = select(wins, acc[k][c], best);
                which = (wins & ((v16i){} + k)) | (which & ~wins);
              }
              const int64_t o = ((((int64_t)p * Co + co0 + c) * Hp + y) * Wp + x) * N + n;
              STORE(out + o, best);
              STOREI(idx + o, which);
            }
          }
    }
  }
}

/* One (y, x) position of conv_backward_input for NB vectors of images starting at n. */
INLINE void backward_input_at(const float *gp, const float *wp, const float *inp, float *ginp,
                              int ci0, int cb, int Ci, int Co, int H, int W, int N, int y,
                              int x, int n, const int NB, const int act) {
  const int Ho = H - 2, Wo = W - 2;
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
    for (int j = 0; j < NB; j++) {
      const int64_t o = (((int64_t)(ci0 + c) * H + y) * W + x) * N + n + 16 * j;
      STORE(ginp + o, act == LINEAR ? acc[c][j] : acc[c][j] * derivative(act, LOAD(inp + o)));
    }
}

/* conv_backward_input for one activation code, a compile-time constant once inlined. */
INLINE void backward_input(const float *g, const float *w, const float *in, float *gin, int P,
                           int Ci, int Co, int H, int W, int N, const int act) {
  for (int p = 0; p < P; p++) {
    const float *gp = g + (int64_t)p * Co * (H - 2) * (W - 2) * N;
    const float *wp = w + (int64_t)p * Co * Ci * 9;
    const float *inp = in + (int64_t)p * Ci * H * W * N;
    float *ginp = gin + (int64_t)p * Ci * H * W * N;
    for (int ci0 = 0; ci0 < Ci; ci0 += BLOCK) {
      const int cb = Ci - ci0 < BLOCK ? Ci - ci0 : BLOCK;
      for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
          int n = 0;
          for (; n + 32 <= N; n += 32)
            backward_input_at(gp, wp, inp, ginp, ci0, cb, Ci, Co, H, W, N, y, x, n, 2, act);
          if (n < N)
            backward_input_at(gp, wp, inp, ginp, ci0, cb, Ci, Co, H, W, N, y, x, n, 1, act);
        }
    }
  }
}

/* gin[p, ci, y, x] = act'(in[p, ci, y, x]) * sum over co, dy, dx of
 *   w[p, co, ci, dy, dx] * g[p, co, y - dy, x - dx],
 * the gradient of the layer's input before its activation: in holds that activation's
 * output and act its code (LINEAR: the gradient of in itself). */
void conv_backward_input(const float *g, const float *w, const float *in, int act, float *gin,
                         int P, int Ci, int Co, int H, int W, int N) {
  switch (act) {
    case RELU: backward_input(g, w, in, gin, P, Ci, Co, H, W, N, RELU); break;
    case TANH: backward_input(g, w, in, gin, P, Ci, Co, H, W, N, TANH); break;
    case SIGMOID: backward_input(g, w, in, gin, P, Ci, Co, H, W, N, SIGMOID); break;
    case HARD_SIGMOID: backward_input(g, w, in, gin, P, Ci, Co, H, W, N, HARD_SIGMOID); break;
    case SOFTSIGN: backward_input(g, w, in, gin, P, Ci, Co, H, W, N, SOFTSIGN); break;
    default: backward_input(g, w, in, gin, P, Ci, Co, H, W, N, LINEAR);
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


/* 2x2 max pooling over (M, H, W, N) maps (M = P * C), with idx as conv_pool_forward's. */
void pool_forward(const float *in, float *out, int32_t *idx, int M, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  for (int m = 0; m < M; m++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++)
        for (int n = 0; n < N; n += 16) {
          const float *a = in + (((int64_t)m * H + 2 * y) * W + 2 * x) * N + n;
          const float *window[4] = {a, a + N, a + (int64_t)W * N, a + (int64_t)W * N + N};
          v16 best = LOAD(window[0]);
          v16i which = {};
          for (int k = 1; k < 4; k++) {
            const v16 v = LOAD(window[k]);
            const v16i wins = v > best;
            best = select(wins, v, best);
            which = (wins & ((v16i){} + k)) | (which & ~wins);
          }
          const int64_t o = (((int64_t)m * Ho + y) * Wo + x) * N + n;
          STORE(out + o, best);
          STOREI(idx + o, which);
        }
}

/* gin = the pooled gradient g routed back to each window's winner idx, zero elsewhere */
void pool_backward(const float *g, const int32_t *idx, float *gin, int M, int H, int W, int N) {
  const int Ho = H / 2, Wo = W / 2;
  for (int m = 0; m < M; m++)
    for (int y = 0; y < Ho; y++)
      for (int x = 0; x < Wo; x++)
        for (int n = 0; n < N; n += 16) {
          const int64_t o = (((int64_t)m * Ho + y) * Wo + x) * N + n;
          const v16 gv = LOAD(g + o);
          const v16i which = LOADI(idx + o);
          float *a = gin + (((int64_t)m * H + 2 * y) * W + 2 * x) * N + n;
          float *window[4] = {a, a + N, a + (int64_t)W * N, a + (int64_t)W * N + N};
          for (int k = 0; k < 4; k++)
            STORE(window[k], (v16)((v16i)gv & (which == ((v16i){} + k))));
        }
}

/* The backward pass of conv_pool_forward, a member at a time: its full-size gradient is
 * unpooled into scratch (Co * (H - 2) * (W - 2) * N floats), which stays in cache for the
 * two convolution gradients that read it. Arguments as conv_backward_input's and
 * conv_backward_weight's, with g and idx pooled. */
void conv_pool_backward(const float *g, const int32_t *idx, const float *w, const float *in,
                        int act, float *gin, float *gw, float *gb, float *scratch, int P,
                        int Ci, int Co, int H, int W, int N) {
  const int64_t pooled = (int64_t)Co * ((H - 2) / 2) * ((W - 2) / 2) * N;
  const int64_t image = (int64_t)Ci * H * W * N, weights = (int64_t)Co * Ci * 9;
  for (int p = 0; p < P; p++) {
    pool_backward(g + p * pooled, idx + p * pooled, scratch, Co, H - 2, W - 2, N);
    conv_backward_input(scratch, w + p * weights, in + p * image, act, gin + p * image, 1, Ci,
                        Co, H, W, N);
    conv_backward_weight(scratch, in + p * image, gw + p * weights, gb + (int64_t)p * Co, 1,
                         Ci, Co, H, W, N);
  }
}
